"""Hours a placement takes from a listing, by the matcher's own rounding rule (loads rounded
UP to whole hours after the share, free capacity rounded DOWN), so the commit and the
optimiser can never disagree about what fits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from matcher.encode import free_whole_hours, source_shares, whole_hours
from schemas.market import Role, month_index, month_name

ListingKey = tuple[str, str, str]  # site id, process, month


__all__ = ["free_whole_hours", "placement_hours", "role_share", "whole_hours"]


def role_share(second_source_required: bool, second_source_share: float, role: Role) -> float:
    """The share of the project ``role`` carries, by the matcher's own split."""
    shares = source_shares(second_source_required, second_source_share)
    return shares[1] if role == Role.SECOND_SOURCE and len(shares) > 1 else shares[0]


def placement_hours(project: Any, site_id: str, role: Role) -> dict[ListingKey, int]:
    """Whole hours ``project`` (a row or a snapshot project) needs at ``site_id`` in ``role``,
    per (site, process, month)."""
    share = role_share(project.second_source_required, project.second_source_share, role)
    first = month_index(project.window_start)
    need: dict[ListingKey, int] = {}
    for load in project.loads:
        process = load["process"] if isinstance(load, Mapping) else str(load.process)
        hours = load["monthly_hours"] if isinstance(load, Mapping) else load.monthly_hours
        for offset, h in enumerate(hours):
            amount = whole_hours(float(h), share)
            if amount:
                key = (site_id, str(process), month_name(first + offset))
                need[key] = need.get(key, 0) + amount
    return need


def add_hours(total: dict[ListingKey, int], parts: Iterable[dict[ListingKey, int]]) -> None:
    for part in parts:
        for key, amount in part.items():
            total[key] = total.get(key, 0) + amount


def empty_hours() -> defaultdict[ListingKey, int]:
    return defaultdict(int)
