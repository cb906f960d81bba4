"""Why a project was not placed: one BlockReason, a sentence, and capacity shortfalls.

The reason is decided in this order:

1. a row (the project, or one of its two sources) has no eligible site at all: the reason is
   the rule that eliminated the last sites, i.e. the last rule in the test order with a
   non-zero rejection count (category/class, process, certification, market, excluded,
   budget, capacity of every site on its own); with capacity, the shortfalls against free
   capacity at the sites that failed on capacity alone are listed;
2. a second source is required and no pair of eligible sites is at two different CDMOs;
3. no placement has a positive value (cost outweighs value everywhere): outvalued;
4. otherwise capacity: its candidate sites are full. The shortfalls of its best few
   candidates against the residual capacity left by the final assignment are listed.

Shortfalls are in whole hours (the model's unit: loads rounded up, capacity down).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from matcher import reference
from matcher.kernels import ELIGIBLE, R_CAPACITY, RULES
from matcher.model import NONE, usage_of
from matcher.problem import PROCESSES, ROLE_SECOND, MarketProblem
from schemas.market import BlockReason, CapacityShortfall, Unassigned

RULE_REASON = {
    "category_or_class": BlockReason.CATEGORY_OR_CLASS,
    "process": BlockReason.PROCESS,
    "certification": BlockReason.CERTIFICATION,
    "market": BlockReason.NO_SITE_IN_MARKET,
    "excluded": BlockReason.EXCLUDED,
    "budget": BlockReason.BUDGET,
    "capacity": BlockReason.CAPACITY,
}
RULE_TEXT = {
    "category_or_class": "do not serve its category and class",
    "process": "do not run (or list) every required process",
    "certification": "lack a required certificate valid over the window for its class",
    "market": "are neither in nor certified for a target market",
    "excluded": "belong to an excluded CDMO",
    "budget": "would exceed its budget",
    "capacity": "lack the free capacity for its load even when empty",
}
SHORTFALL_SITES = 3  # sites whose shortfalls are listed, per row
SHORTFALLS_PER_SITE = 6
EXPLAIN_CHUNK = 256  # rows evaluated at once for capacity-alone shortfalls


def _shortfall(problem: MarketProblem, site: int, off: int, hours: int) -> CapacityShortfall:
    enc = problem.enc
    # Built without validation: every field comes from already validated data.
    return CapacityShortfall.model_construct(
        site_id=enc.site_ids[site],
        process=PROCESSES[off // enc.n_months],
        month=enc.month_names[off % enc.n_months],
        short_hours=float(hours),
    )


def _unassigned(
    pid: str, reason: BlockReason, detail: str, shortfalls: list[CapacityShortfall] | None = None
) -> Unassigned:
    return Unassigned.model_construct(
        project_id=pid, reason=reason, detail=detail, shortfalls=shortfalls or []
    )


def _role_text(problem: MarketProblem, r: int) -> str:
    enc = problem.enc
    if enc.project_rows[enc.row_project[r], 1] < 0:
        return ""
    role = "second source" if enc.row_role[r] == ROLE_SECOND else "primary source"
    return f" for its {role} ({enc.row_share[r]:.0%} of the load)"


def _short(problem: MarketProblem, c: int, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resources where candidate ``c`` does not fit in ``residual``, and by how much."""
    model = problem.model
    sl = slice(model.use_ptr[c], model.use_ptr[c + 1])
    res, amt = model.use_res[sl], model.use_amt[sl]
    gap = amt - residual[res]
    hit = gap > 0
    return res[hit], gap[hit]


def _candidate_shortfalls(
    problem: MarketProblem, c: int, residual: np.ndarray
) -> list[CapacityShortfall]:
    res, gap = _short(problem, c, residual)
    keys = problem.res_key[res[:SHORTFALLS_PER_SITE]]
    pt = max(1, len(PROCESSES) * problem.enc.n_months)
    return [
        _shortfall(problem, int(k // pt), int(k % pt), int(h))
        for k, h in zip(keys, gap[:SHORTFALLS_PER_SITE], strict=True)
    ]


def _alone_shortfalls(problem: MarketProblem, rows: list[int]) -> dict[int, list]:
    """Shortfalls against free capacity at the sites that fail each row on capacity alone."""
    enc = problem.enc
    sites, arrays = enc.sites, enc.rows
    out: dict[int, list] = {}
    for lo in range(0, len(rows), EXPLAIN_CHUNK):
        chunk = rows[lo : lo + EXPLAIN_CHUNK]
        codes = reference.first_failed_rules(sites, arrays, np.array(chunk))
        for r, code in zip(chunk, codes, strict=True):
            cap_sites = np.flatnonzero(code == R_CAPACITY)
            sl = slice(arrays.ent_ptr[r], arrays.ent_ptr[r + 1])
            off, units = arrays.ent_off[sl], arrays.ent_units[sl]
            short = np.maximum(units[None, :] - sites.free[cap_sites][:, off], 0)
            best = np.lexsort((cap_sites, short.sum(axis=1)))[:SHORTFALL_SITES]
            out[r] = [
                _shortfall(problem, int(cap_sites[i]), int(off[e]), int(short[i, e]))
                for i in best
                for e in np.flatnonzero(short[i] > 0)[:SHORTFALLS_PER_SITE]
            ]
    return out


def _no_eligible(problem: MarketProblem, r: int, pid: str) -> Unassigned:
    counts = problem.scored.counts[r]
    n_sites = problem.enc.sites.n_sites
    if n_sites == 0:
        return _unassigned(pid, BlockReason.NO_ELIGIBLE_SITE, "the market has no sites")
    failed = [i for i in range(len(RULES)) if counts[i] > 0]
    last = RULES[failed[-1]]
    parts = [f"{int(counts[i])} {RULE_TEXT[RULES[i]]}" for i in failed[:-1]]
    detail = f"no eligible site{_role_text(problem, r)} among {n_sites}: "
    if parts:
        detail += "; ".join(parts) + "; "
    detail += f"the last {int(counts[failed[-1]])} {RULE_TEXT[last]}"
    return _unassigned(pid, RULE_REASON[last], detail)


def explain(
    problem: MarketProblem, choice: np.ndarray, *, stop: Callable[[], bool] | None = None
) -> list[Unassigned]:
    """One Unassigned per project that ``choice`` leaves unplaced, in project order. Once
    ``stop()`` is true (a cancelled run), the rest are listed as not explained."""
    enc, model = problem.enc, problem.model
    choice = np.asarray(choice, dtype=np.int64)
    residual = model.capacity - usage_of(model, choice)
    counts = problem.scored.counts
    ptr = model.cand_ptr
    out: list[Unassigned] = []
    alone: dict[int, int] = {}  # position in `out` -> row needing capacity-alone shortfalls
    for j in np.flatnonzero(choice[enc.project_rows[:, 0]] == NONE):
        pid = enc.project_ids[j]
        if stop is not None and stop():
            out.append(_unassigned(pid, BlockReason.NOT_EXPLAINED, "the run stopped first"))
            continue
        rows = [int(r) for r in enc.project_rows[j] if r >= 0]
        empty = [r for r in rows if counts[r, ELIGIBLE] == 0]
        if empty:
            out.append(_no_eligible(problem, empty[0], pid))
            if out[-1].reason == BlockReason.CAPACITY:
                alone[len(out) - 1] = empty[0]
            continue
        cands = [np.arange(ptr[r], ptr[r + 1]) for r in rows]
        if len(rows) == 2:
            g0, g1 = (model.bin_group[model.cand_bin[c]] for c in cands)
            if not (g0[:, None] != g1[None, :]).any():
                cdmo = enc.cdmo_ids[int(g0[0])]
                detail = (
                    f"every eligible site for both sources belongs to CDMO {cdmo}; "
                    "a second source must be at a different CDMO"
                )
                out.append(_unassigned(pid, BlockReason.NO_SECOND_SOURCE, detail))
                continue
        # An upper bound on the best placement (ignores the CDMO rule between two sources).
        best = sum(
            max(int(model.cand_value[c].max()), int(model.outside_best[r]))
            for c, r in zip(cands, rows, strict=True)
        )
        if best <= 0:
            detail = (
                f"its best placement is worth at most {best} points: cost outweighs value "
                "at every eligible site"
            )
            out.append(_unassigned(pid, BlockReason.OUTVALUED, detail))
            continue
        shortfalls: list[CapacityShortfall] = []
        full = 0
        for c_row in cands:
            for i, c in enumerate(c_row):
                if len(_short(problem, int(c), residual)[0]):
                    full += 1
                    if i < SHORTFALL_SITES:
                        shortfalls.extend(_candidate_shortfalls(problem, int(c), residual))
        n_cand = sum(len(c) for c in cands)
        if full:
            detail = (
                f"{full} of its {n_cand} candidate placements lack free capacity once the "
                "assigned projects are served"
            )
        else:
            detail = (
                "its candidate sites have room on their own, but not together with its other "
                "source, or not within the solver's time limit"
            )
        out.append(_unassigned(pid, BlockReason.CAPACITY, detail, shortfalls))
    found = _alone_shortfalls(problem, list(alone.values()))
    for pos, r in alone.items():
        out[pos] = out[pos].model_copy(update={"shortfalls": found[r]})
    return out
