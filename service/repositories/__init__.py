"""Service functions over the tables: visibility, validation in context, transactions.

Keyword-only, one transaction each (they commit or raise, never half-write), raising
:mod:`service.errors` exceptions. The routes are thin wrappers; later issues (optimiser
batches) call the same functions.
"""

from service.repositories import bulk, listings, market, orgs, projects, proposals, runs, sites

__all__ = ["bulk", "listings", "market", "orgs", "projects", "proposals", "runs", "sites"]
