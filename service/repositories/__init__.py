"""Service functions over the tables: visibility, validation in context, transactions.

Keyword-only, one transaction each (they commit or raise, never half-write), raising
:mod:`service.errors` exceptions. The routes are thin wrappers; later issues (optimiser
batches) call the same functions.
"""

from service.repositories import listings, market, orgs, projects, proposals, sites

__all__ = ["listings", "market", "orgs", "projects", "proposals", "sites"]
