"""Certificate renewals: a chain of certificates counts as one over its whole span.

A certificate is renewed before (or when) it expires: the new one starts on or before the day
after the old one ends. Two certificates of the same kind and the same scope (device classes)
that follow each other without a gap, or overlap, together cover the union of their periods,
so a routine renewal in the middle of a project's window does not block the site. Issuers may
differ (a site may change notified body). Certificates of different scopes are not joined.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from schemas.market import Certification, CertificationKind, RegulatoryClass

Span = tuple[CertificationKind, frozenset[RegulatoryClass], dt.date, dt.date]


def renewal_chains(certs: Iterable[Certification]) -> list[Span]:
    """(kind, scope, first day, last day) of every chain of renewals, in a stable order."""
    by_scope: dict[tuple[CertificationKind, frozenset[RegulatoryClass]], list] = {}
    for c in certs:
        by_scope.setdefault((c.kind, frozenset(c.device_classes)), []).append(
            (c.valid_from, c.valid_until)
        )
    out: list[Span] = []
    for (kind, scope), periods in by_scope.items():
        periods.sort()
        start, end = periods[0]
        for lo, hi in periods[1:]:
            if lo <= end + dt.timedelta(days=1):
                end = max(end, hi)
                continue
            out.append((kind, scope, start, end))
            start, end = lo, hi
        out.append((kind, scope, start, end))
    return out
