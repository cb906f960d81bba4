"""Explanations and run analytics, computed from a run's stored snapshot and answer.

The run's snapshot (compressed JSON) is decoded and re-encoded by the matcher exactly as the
run encoded it, and the run's placements are laid over it (``run_explain.run_view``);
values come from the matcher's one value formula (``matcher.pricing.value_parts``), rules
from its NumPy twin of the kernels. Nothing is templated from stored reasons: the stored
reason is shown beside the recomputed one.

The worker computes every explanation of a run when the run commits
(:func:`store_run_explanations`, table ``run_explanations``), so the API's
``GET /v1/projects/{id}/explanation`` and ``GET /v1/proposals/{id}/explanation`` are reads;
a run committed before that existed (or whose explanations are still being stored) is
explained here from its snapshot, with the same functions. A finished run never changes, so
its view is kept in a small in-process cache (by run id).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import exists, or_
from sqlmodel import Session, col, select

from schemas.api import RunStatus
from schemas.api.explanations import (
    PlacementExplanation,
    ProjectExplanation,
    ProposalExplanation,
    RunBottlenecks,
    RunRef,
    RunUtilisation,
    SiteFit,
    UnplacedExplanation,
    UtilisationRow,
    UtilisationTotal,
)
from schemas.market import BlockReason, MarketSnapshot, Role, RunParams
from service.db import Database
from service.errors import InvalidFieldError, InvalidStateError
from service.flows.match_run import decode_snapshot
from service.models import (
    MatchRun,
    MatchRunAssignment,
    MatchRunUnassigned,
    Project,
    Proposal,
    RunExplanation,
)
from service.pagination import PageParams, encode_cursor

VIEW_CACHE_SIZE = 2  # a large run's view (snapshot objects + arrays) takes hundreds of MB


@dataclass(frozen=True)
class _Run:
    ref: RunRef
    snapshot: MarketSnapshot
    view: object  # matcher.run_explain.RunView (the matcher is imported lazily: JIT, numpy)
    unassigned: dict[str, str]  # project id -> stored reason
    derived: dict[str, object] = field(default_factory=dict)  # utilisation, bottlenecks

    def once(self, name: str, compute: Callable[[], object]) -> Any:
        """``compute()`` the first time, the same answer afterwards (a run never changes)."""
        if name not in self.derived:
            self.derived[name] = compute()
        return self.derived[name]


_cache: OrderedDict[str, _Run] = OrderedDict()
_lock = threading.Lock()


def _ref(run: MatchRun) -> RunRef:
    return RunRef(run_id=run.id, finished_at=run.finished_at, market_version=run.market_version)


def _load(session: Session, run: MatchRun) -> _Run:
    """The run's view, from the cache or built from its stored snapshot."""
    with _lock:
        hit = _cache.get(run.id)
        if hit is not None:
            _cache.move_to_end(run.id)
            return hit
    if run.summary is None:
        raise InvalidStateError(f"run {run.id} has no answer yet ({run.status})")
    if run.snapshot_gz is None:
        why = "was pruned" if run.snapshot_pruned else "is not stored"
        raise InvalidStateError(f"the snapshot of run {run.id} {why}: nothing to explain from")
    from matcher.run_explain import run_view

    snapshot = decode_snapshot(run.snapshot_gz)
    placements = [
        (a.project_id, a.role, a.site_id)
        for a in session.exec(select(MatchRunAssignment).where(MatchRunAssignment.run_id == run.id))
    ]
    unassigned = {
        u.project_id: u.reason
        for u in session.exec(select(MatchRunUnassigned).where(MatchRunUnassigned.run_id == run.id))
    }
    view = run_view(snapshot, RunParams.model_validate(run.params), placements)
    loaded = _Run(_ref(run), snapshot, view, unassigned)
    with _lock:
        _cache[run.id] = loaded
        while len(_cache) > VIEW_CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded


def latest_committed_run(session: Session, project_id: str) -> MatchRun:
    """The newest committed run (succeeded, not a dry run or replay) that included the
    project, placed or not; 409 when there is none."""
    included = or_(
        exists().where(
            col(MatchRunAssignment.run_id) == col(MatchRun.id),
            col(MatchRunAssignment.project_id) == project_id,
        ),
        exists().where(
            col(MatchRunUnassigned.run_id) == col(MatchRun.id),
            col(MatchRunUnassigned.project_id) == project_id,
        ),
    )
    stmt = (
        select(MatchRun)
        .where(
            col(MatchRun.status) == RunStatus.SUCCEEDED.value,
            col(MatchRun.dry_run).is_(False),
            col(MatchRun.replay_of).is_(None),
            included,
        )
        .order_by(col(MatchRun.id).desc())
        .limit(1)
    )
    run = session.exec(stmt).first()
    if run is None:
        raise InvalidStateError(
            f"no committed match run has included project {project_id} yet: nothing to explain"
        )
    return run


def _rows(loaded: _Run, project_id: str) -> list[int]:
    enc = loaded.view.enc  # type: ignore[attr-defined]
    j = enc.project_ids.index(project_id)
    return [int(r) for r in enc.project_rows[j] if r >= 0]


PROJECT, PROPOSAL = "project", "proposal"


def _stored(session: Session, run_id: str, kind: str, subject_id: str) -> dict[str, Any] | None:
    row = session.get(RunExplanation, (run_id, kind, subject_id))
    return row.body if row is not None else None


def project_explanation(session: Session, project: Project) -> ProjectExplanation:
    run = latest_committed_run(session, project.id)
    body = _stored(session, run.id, PROJECT, project.id)
    if body is not None:  # computed by the worker when the run committed: a read
        return ProjectExplanation.model_validate(body)
    return _project_explanation(session, run, _load(session, run), project.id)


def _project_explanation(
    session: Session,
    run: MatchRun,
    loaded: _Run,
    project_id: str,
    outcomes_of: dict[str, dict[str, tuple[str | None, str | None]]] | None = None,
) -> ProjectExplanation:
    from matcher.run_explain import why_here, why_not

    view = loaded.view
    rows = _rows(loaded, project_id)
    stored = loaded.unassigned.get(project_id)
    if all(r in view.placed for r in rows):  # type: ignore[attr-defined]
        if outcomes_of is not None:
            outcomes = outcomes_of.get(project_id, {})
        else:
            outcomes = {
                a.role: (a.outcome, a.detail)
                for a in session.exec(
                    select(MatchRunAssignment).where(
                        MatchRunAssignment.run_id == run.id,
                        MatchRunAssignment.project_id == project_id,
                    )
                )
            }
        placements = []
        for r in rows:
            placement = PlacementExplanation.model_validate(why_here(view, r))  # type: ignore[arg-type]
            outcome, detail = outcomes.get(placement.role.value, (None, None))
            placements.append(
                placement.model_copy(update={"outcome": outcome, "outcome_detail": detail})
            )
        return ProjectExplanation(
            project_id=project_id,
            run=loaded.ref,
            placed=True,
            placements=placements,
            unplaced=None,
            summary="; ".join(p.summary for p in placements),
        )
    whys = [why_not(view, r) for r in rows]  # type: ignore[arg-type]
    why = min(whys, key=lambda w: (w.capacity_sites, w.role))
    unplaced = UnplacedExplanation.model_validate(why)
    return ProjectExplanation(
        project_id=project_id,
        run=loaded.ref,
        placed=False,
        placements=[],
        unplaced=unplaced,
        stored_reason=BlockReason(stored) if stored else None,
        summary=f"not placed ({unplaced.reason.value}): {unplaced.detail}",
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def proposal_explanation(session: Session, proposal: Proposal) -> ProposalExplanation:
    """Why the proposal's site was chosen, from the run that made it, in the site's own
    figures: nothing of the maker's budget, exclusions, priority or points."""
    run = session.get(MatchRun, proposal.batch_id) if proposal.batch_id else None
    if run is None:
        raise InvalidStateError(
            f"proposal {proposal.id} was made by an operator, not by a match run: "
            "there is no run to explain it from"
        )
    body = _stored(session, run.id, PROPOSAL, proposal.id)
    if body is not None:  # computed by the worker when the run committed: a read
        return ProposalExplanation.model_validate(body)
    return _proposal_explanation(run, _load(session, run), proposal)


def _proposal_explanation(run: MatchRun, loaded: _Run, proposal: Proposal) -> ProposalExplanation:
    from matcher.run_explain import row_rules, why_here

    view = loaded.view
    enc = view.enc  # type: ignore[attr-defined]
    j = enc.project_ids.index(proposal.project_id)
    r = int(enc.project_rows[j, 1 if proposal.role == Role.SECOND_SOURCE.value else 0])
    site = enc.site_ids.index(proposal.site_id)
    if view.placed.get(r) != site:  # type: ignore[attr-defined]
        raise InvalidStateError(f"run {run.id} did not place this source at {proposal.site_id}")
    why = why_here(view, r)  # type: ignore[arg-type]
    code = row_rules(view, r)[0]  # type: ignore[arg-type]
    from matcher.kernels import R_CAPACITY

    record = next(s for s in loaded.snapshot.sites if s.id == proposal.site_id).quality
    b = why.breakdown
    before_cost = b.priority + b.fit
    fit_share = b.fit / before_cost if before_cost > 0 else 0.0
    fit = SiteFit(
        quality=round(why.quality, 4),
        on_time_rate=record.on_time_rate,
        inspection_findings=record.inspection_findings,
        lead_time_weeks=record.lead_time_weeks,
        in_target_market=why.in_target_market,
        fit_points_share=round(fit_share, 4),
        cost=round(why.cost, 2),
        previous_site=why.previous_site,
        fits_capacity=int(code[site]) != R_CAPACITY,
    )
    summary = (
        f"your site {proposal.site_id} came {_ordinal(why.rank)} by the matcher's value among "
        f"the sites eligible for this project: quality score {fit.quality:.2f} (on time "
        f"{fit.on_time_rate:.0%}, {fit.inspection_findings} inspection finding(s), "
        f"{fit.lead_time_weeks} weeks lead time), "
        f"{'in' if fit.in_target_market else 'outside'} a target market, cost "
        f"{fit.cost:,.0f} at your prices"
        f"{', and it was proposed there before (stability)' if fit.previous_site else ''}"
    )
    return ProposalExplanation(
        proposal_id=proposal.id,
        project_id=proposal.project_id,
        site_id=proposal.site_id,
        role=Role(proposal.role),
        run=loaded.ref,
        site=fit,
        rank=why.rank,
        summary=summary,
    )


def store_run_explanations(db: Database, run_id: str, *, chunk: int = 1000) -> int:
    """In the worker, once the run has committed: every project's explanation and every
    proposal's it made, stored with the run (one transaction per ``chunk`` rows; a rerun
    replaces them). Returns how many were stored."""
    from sqlalchemy import delete, insert

    with db.session(write=False) as session:
        run = session.get(MatchRun, run_id)
        if run is None or run.status != RunStatus.SUCCEEDED.value or run.dry_run:
            return 0
        loaded = _load(session, run)
        outcomes: dict[str, dict[str, tuple[str | None, str | None]]] = {}
        for a in session.exec(
            select(MatchRunAssignment).where(MatchRunAssignment.run_id == run_id)
        ):
            outcomes.setdefault(a.project_id, {})[a.role] = (a.outcome, a.detail)
        proposals = list(session.exec(select(Proposal).where(Proposal.batch_id == run_id)))
        rows: list[dict[str, Any]] = []
        for project_id in loaded.view.enc.project_ids:  # type: ignore[attr-defined]
            body = _project_explanation(session, run, loaded, project_id, outcomes)
            rows.append(_row(run_id, PROJECT, project_id, body))
        for proposal in proposals:
            try:
                body_p = _proposal_explanation(run, loaded, proposal)
            except InvalidStateError:  # not this run's placement any more: explained on demand
                continue
            rows.append(_row(run_id, PROPOSAL, proposal.id, body_p))
    with db.session() as session:
        session.execute(delete(RunExplanation).where(col(RunExplanation.run_id) == run_id))
        session.commit()
    for i in range(0, len(rows), chunk):
        with db.session() as session:
            session.execute(insert(RunExplanation), rows[i : i + chunk])
            session.commit()
    return len(rows)


def _row(run_id: str, kind: str, subject_id: str, body: BaseModel) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "kind": kind,
        "subject_id": subject_id,
        "body": body.model_dump(mode="json"),
    }


def _analysable(run: MatchRun) -> None:
    if run.summary is None:
        raise InvalidStateError(f"run {run.id} has no answer yet ({run.status})")


@dataclass(frozen=True)
class UtilisationFilters:
    site_id: str | None = None
    process: str | None = None
    month_from: str | None = None
    month_to: str | None = None


def run_utilisation(
    session: Session, run: MatchRun, filters: UtilisationFilters, page: PageParams
) -> RunUtilisation:
    from matcher.run_explain import utilisation

    _analysable(run)
    loaded = _load(session, run)
    cells = loaded.once("utilisation", lambda: utilisation(loaded.view, loaded.snapshot))  # type: ignore[arg-type]
    free = cells.free_hours
    keys, group = np.unique(
        np.char.add(np.char.add(cells.month, " "), cells.process), return_inverse=True
    )

    def per_key(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values, minlength=len(keys))

    cap, res = per_key(cells.capacity_hours), per_key(cells.reserved_hours)
    used, left = per_key(cells.used_hours.astype(np.float64)), per_key(free)
    totals = []
    for k, key in enumerate(keys.tolist()):
        month, process = key.split(" ")
        totals.append(
            UtilisationTotal(
                process=process,
                month=month,
                capacity_hours=float(cap[k]),
                reserved_hours=float(res[k]),
                used_hours=int(used[k]),
                free_hours=float(left[k]),
                utilisation=round((res[k] + used[k]) / cap[k], 4) if cap[k] > 0 else 0.0,
            )
        )
    f = filters
    keep = np.ones(len(cells.month), dtype=bool)
    if f.site_id is not None:
        keep &= cells.site_id == f.site_id
    if f.process is not None:
        keep &= cells.process == f.process
    if f.month_from is not None:
        keep &= cells.month >= f.month_from
    if f.month_to is not None:
        keep &= cells.month <= f.month_to
    index = np.flatnonzero(keep)
    # The cursor is a position in the filtered list (a run's cells never change).
    start = _position(page.after)
    end = start + page.limit
    cursor = encode_cursor(f"{end:010d}") if len(index) > end else None
    items = [
        UtilisationRow(
            site_id=str(cells.site_id[i]),
            process=str(cells.process[i]),  # type: ignore[arg-type]
            month=str(cells.month[i]),
            capacity_hours=float(cells.capacity_hours[i]),
            reserved_hours=float(cells.reserved_hours[i]),
            used_hours=int(cells.used_hours[i]),
            free_hours=float(free[i]),
        )
        for i in index[start:end]
    ]
    return RunUtilisation(run=loaded.ref, totals=totals, items=items, next_cursor=cursor)


def _position(after: str | None) -> int:
    if after is None:
        return 0
    if not after.isdigit():
        raise InvalidFieldError(
            "cursor", "not a cursor returned by this API", location="query", code="cursor_invalid"
        )
    return int(after)


def run_bottlenecks(session: Session, run: MatchRun) -> RunBottlenecks:
    from matcher.run_explain import bottlenecks

    _analysable(run)
    loaded = _load(session, run)
    found = loaded.once("bottlenecks", lambda: bottlenecks(loaded.view, loaded.snapshot))  # type: ignore[arg-type]
    return RunBottlenecks.model_validate({**found.__dict__, "run": loaded.ref})
