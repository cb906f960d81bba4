"""Service functions over the tables: visibility, validation in context, transactions.

Keyword-only; they never commit: they add to the caller's session and flush, and the edge
(a route's :class:`service.transactions.Transaction`, or a CLI command) commits once. Raising
:mod:`service.errors` exceptions. The routes are thin wrappers; later issues (optimiser
batches) call the same functions.
"""

from service.repositories import (
    bulk,
    listings,
    market,
    orgs,
    pair_rules,
    projects,
    proposals,
    runs,
    sites,
)

__all__ = [
    "bulk",
    "listings",
    "market",
    "orgs",
    "pair_rules",
    "projects",
    "proposals",
    "runs",
    "sites",
]
