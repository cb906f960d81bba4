"""From a run's verified answer to proposals, in one transaction, never double-booked.

Capacity may have changed since the snapshot. Inside one transaction the commit locks the
projects and the listings of every site it places at (so a concurrent capacity update waits,
or is waited for), recomputes the free whole hours of each listing now (capacity - reserved -
hours held by proposals this commit does not replace) and takes placements in the answer's
order while they fit. A placement that no longer fits is listed with the reason ("capacity
changed at site X, process P, month M"); the two sources of a project go together or not at
all. The run's final status is written in the same transaction, so a commit interrupted by a
crash leaves nothing behind and is simply retried.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from schemas.api import CommitSummary, RunStatus, RunSummary, SkippedPlacement
from schemas.market import Role
from service import repositories as repo
from service.db import read_market_version
from service.flows.capacity import ListingKey, free_whole_hours, placement_hours
from service.flows.snapshot import held_by_proposals
from service.models import Listing, MatchRun, Project, Site
from service.repositories.proposals import BatchPlacement

log = logging.getLogger(__name__)

MAX_SKIPPED_IN_SUMMARY = 200


@dataclass(frozen=True)
class ProjectRow:
    """What the commit reads of a project (plain columns, not an ORM object: ~20k of them)."""

    id: str
    status: str
    maker_id: str
    excluded_cdmo_ids: list[str]
    second_source_required: bool
    second_source_share: float
    window_start: str
    loads: list[dict[str, Any]]


_PROJECT_COLUMNS = [col(getattr(Project, f.name)) for f in fields(ProjectRow)]


def _lock_projects(session: Session, ids: list[str]) -> dict[str, ProjectRow]:
    out: dict[str, ProjectRow] = {}
    for i in range(0, len(ids), 5000):
        chunk = ids[i : i + 5000]
        stmt = (
            sa_select(*_PROJECT_COLUMNS)
            .where(col(Project.id).in_(chunk))
            .order_by(col(Project.id))
            .with_for_update()
        )
        out.update({row[0]: ProjectRow(*row) for row in session.execute(stmt)})
    return out


def _lock_listings(session: Session, site_ids: list[str]) -> dict[ListingKey, int]:
    """Free whole hours of every listing at these sites, the rows locked (plain tuples: a
    market has ~100k listings, too many to build ORM objects for)."""
    out: dict[ListingKey, int] = {}
    for i in range(0, len(site_ids), 2000):
        chunk = site_ids[i : i + 2000]
        stmt = (
            sa_select(
                col(Listing.site_id),
                col(Listing.process),
                col(Listing.month),
                col(Listing.capacity_hours),
                col(Listing.reserved_hours),
            )
            .where(col(Listing.site_id).in_(chunk))
            .order_by(col(Listing.id))
            .with_for_update()
        )
        for site_id, process, month, capacity, reserved in session.execute(stmt):
            out[(site_id, process, month)] = free_whole_hours(capacity, reserved)
    return out


def _fits(
    need: dict[ListingKey, int], free: dict[ListingKey, int]
) -> tuple[ListingKey, int, int] | None:
    """The first listing where ``need`` does not fit: (key, needed, free); None if it fits."""
    for key in sorted(need):
        have = free.get(key, 0)
        if need[key] > have:
            return key, need[key], have
    return None


def commit(
    session: Session,
    *,
    run: MatchRun,
    token: str,
    summary: RunSummary,
    started: float | None = None,
) -> CommitSummary:
    """Make the proposals of ``run`` (status committing) and mark it succeeded. The caller
    commits the session (one transaction). ``started`` (perf_counter) dates the commit phase
    in the summary's timings."""
    started = time.perf_counter() if started is None else started
    marks = [("start", time.perf_counter())]
    rows = repo.runs.run_assignments(session, run.id)
    projects = _lock_projects(session, sorted({a.project_id for a in rows}))
    site_ids = sorted({a.site_id for a in rows})
    sites = {s.id: s for s in session.exec(select(Site).where(col(Site.id).in_(site_ids)))}
    listings = _lock_listings(session, site_ids)
    placed_pairs = {(a.project_id, a.role) for a in rows}
    held = held_by_proposals(session, exclude=placed_pairs)
    free = {key: hours - held.get(key, 0) for key, hours in listings.items()}
    marks.append(("read_lock", time.perf_counter()))

    by_project: dict[str, list[Any]] = defaultdict(list)
    for a in rows:
        by_project[a.project_id].append(a)
    outcomes: dict[str, tuple[str, str | None]] = {}
    skipped: list[SkippedPlacement] = []
    accepted: list[tuple[Any, BatchPlacement]] = []

    def skip(items: list[Any], why: str) -> None:
        for a in items:
            outcomes[a.pos] = ("skipped", why)
            skipped.append(
                SkippedPlacement(
                    project_id=a.project_id, site_id=a.site_id, role=Role(a.role), reason=why
                )
            )

    done: set[str] = set()
    for a in rows:  # answer order; each project's sources together
        if a.project_id in done:
            continue
        done.add(a.project_id)
        items = by_project[a.project_id]
        project = projects.get(a.project_id)
        if project is None:
            skip(items, f"project {a.project_id} no longer exists")
            continue
        missing = [b.site_id for b in items if b.site_id not in sites]
        if missing:
            skip(items, f"site {missing[0]} no longer exists")
            continue
        needs = [placement_hours(project, b.site_id, Role(b.role)) for b in items]
        total: dict[ListingKey, int] = defaultdict(int)
        for need in needs:
            for key, amount in need.items():
                total[key] += amount
        short = _fits(total, free)
        if short is not None:
            (site_id, process, month), needed, have = short
            skip(
                items,
                f"capacity changed at site {site_id}, process {process}, month {month}: "
                f"needs {needed} h, {max(have, 0)} h free now",
            )
            continue
        for key, amount in total.items():
            free[key] -= amount
        for b in items:
            accepted.append((b, BatchPlacement(project, sites[b.site_id], Role(b.role))))

    marks.append(("check", time.perf_counter()))
    result = repo.proposals.propose_batch(
        session=session,
        placements=[p for _, p in accepted],
        created_by=run.created_by,
        batch_id=run.id,
    )
    refused = result.refused or {}
    for a, _ in accepted:
        why = refused.get((a.project_id, a.role))
        if why is not None:
            skip([a], why)
        else:
            outcomes.setdefault(a.pos, ("proposed", None))
    # What was already proposed there (by an earlier run or by hand) is "unchanged".
    for a, _ in accepted:
        if (a.project_id, a.role) in result.unchanged_keys:
            outcomes[a.pos] = ("unchanged", None)
    marks.append(("propose", time.perf_counter()))
    repo.runs.record_outcomes(
        session,
        run.id,
        [(pos, o, d) for pos, (o, d) in sorted(outcomes.items())],
        default="proposed",
    )
    commit_summary = CommitSummary(
        proposed=result.created,
        unchanged=result.unchanged,
        superseded=result.superseded,
        skipped=skipped[:MAX_SKIPPED_IN_SUMMARY],
        market_version=read_market_version(session),
    )
    if len(skipped) > MAX_SKIPPED_IN_SUMMARY:
        summary = summary.model_copy(
            update={
                "notes": [
                    *summary.notes,
                    f"{len(skipped)} placements skipped; the first {MAX_SKIPPED_IN_SUMMARY} "
                    "are in the summary, all in /assignments (outcome skipped)",
                ]
            }
        )
    marks.append(("outcomes", time.perf_counter()))
    # The commit's parts: read + lock, capacity check, proposals (+ their notifications),
    # outcomes; the last mark to the final write is the summary and the run's status.
    parts = {
        f"commit.{name}": round(at - before, 3)
        for (_, before), (name, at) in zip(marks, marks[1:], strict=False)
    }
    timings = {
        **summary.timings,
        **parts,
        "commit": round(time.perf_counter() - started, 3),
    }
    final = summary.model_copy(update={"commit": commit_summary, "timings": timings})
    repo.runs.finish(
        session=session, run_id=run.id, token=token, status=RunStatus.SUCCEEDED, summary=final
    )
    log.info(
        "run committed: %d proposed, %d unchanged, %d skipped",
        result.created,
        result.unchanged,
        len(skipped),
        extra={"run_id": run.id},
    )
    return commit_summary
