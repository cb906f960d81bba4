"""Why a project was not placed: one BlockReason, a sentence, and capacity shortfalls.

Every explanation is true of the whole market, not only of the project's candidate list: the
project is scanned against every site serving its category and class (``complete.scan_row``,
the kernels' rules and value) with the capacity the final answer leaves free. The reason is
decided in this order:

1. a row (the project, or one of its two sources) has no eligible site at all: the reason is
   the rule that eliminated the last sites, i.e. the last rule in the test order with a
   non-zero rejection count (category/class, process, certification, market, excluded,
   budget, capacity of every site on its own); with capacity, the shortfalls against free
   capacity at the sites that failed on capacity alone are listed;
2. a second source is required and no two eligible sites can pair: all at one CDMO, or (by
   default) no two at different CDMOs are in different regions: no second source; or every
   such pair costs more than the budget together: budget;
3. no placement (pair) has a positive value (cost outweighs value everywhere): outvalued;
4. capacity: every eligible placement worth making lacks room once the assigned projects are
   served; the sites are named with their shortfall per process and month (the best first);
5. otherwise it fits somewhere and was not placed: only when the run was cancelled before
   the last pass (``matcher.complete``) could place it: not reached.

Shortfalls are in whole hours (the model's unit: loads rounded up, capacity down).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from matcher import reference
from matcher.complete import (
    best_pair,
    cheapest_pair,
    free_left,
    pair_arrays,
    row_sites,
    scan_args,
    scan_row,
)
from matcher.kernels import ELIGIBLE, R_CAPACITY, RULES
from matcher.problem import FIT_MARKET, PROCESSES, REGIONS, ROLE_SECOND, MarketProblem
from schemas.market import BlockReason, CapacityShortfall, Unassigned, trusted_builder

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
SHORTFALL_SITES = 10  # sites whose shortfalls are listed, per row (the best by value first)
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


_build_unassigned = trusted_builder(Unassigned)


def _unassigned(
    pid: str, reason: BlockReason, detail: str, shortfalls: list[CapacityShortfall] | None = None
) -> Unassigned:
    return _build_unassigned(
        {"project_id": pid, "reason": reason, "detail": detail, "shortfalls": shortfalls or []}
    )


def _role_text(problem: MarketProblem, r: int) -> str:
    enc = problem.enc
    if enc.project_rows[enc.row_project[r], 1] < 0:
        return ""
    role = "second source" if enc.row_role[r] == ROLE_SECOND else "primary source"
    return f" for its {role} ({enc.row_share[r]:.0%} of the load)"


def _alone_shortfalls(
    problem: MarketProblem, rows: list[int], stop: Callable[[], bool] | None = None
) -> dict[int, list]:
    """Shortfalls against free capacity at the sites that fail each row on capacity alone
    (once ``stop()`` is true, the rows left get none: the reason stands, unlisted)."""
    enc = problem.enc
    sites, arrays = enc.sites, enc.rows
    out: dict[int, list] = {r: [] for r in rows}
    for lo in range(0, len(rows), EXPLAIN_CHUNK):
        if stop is not None and stop():
            break
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


class _Options:
    """Every eligible site of one row (rules but capacity), with value, cost and whether its
    load fits in what the answer leaves free."""

    def __init__(self, problem: MarketProblem, r: int, left: np.ndarray, args: tuple):
        ptr, g = problem.enc.words.ptr, problem.enc.rows.group[r]
        width = max(1, int(ptr[g + 1] - ptr[g]))  # the sites serving its category and class
        self.site = np.empty(width, np.int32)
        self.value = np.empty(width, np.int64)
        self.cost = np.empty(width, np.float64)
        self.fits = np.empty(width, np.bool_)
        outs = (self.site, self.value, self.cost, self.fits)
        self.n = int(scan_row(*((r, left, False) + args + outs)))
        self.site, self.value = self.site[: self.n], self.value[: self.n]
        self.cost, self.fits = self.cost[: self.n], self.fits[: self.n]
        self.row = r

    def take(self, keep: np.ndarray) -> tuple:
        """(n, site, value, cost) of the options in ``keep``, for the pair search."""
        return int(keep.sum()), self.site[keep], self.value[keep], self.cost[keep]


def _row_shortfalls(
    problem: MarketProblem, r: int, sites: np.ndarray, left: np.ndarray
) -> list[CapacityShortfall]:
    enc = problem.enc
    sl = slice(enc.rows.ent_ptr[r], enc.rows.ent_ptr[r + 1])
    off, units = enc.rows.ent_off[sl], enc.rows.ent_units[sl]
    out = []
    for s in sites[:SHORTFALL_SITES].tolist():
        short = units - left[s, off]
        for e in np.flatnonzero(short > 0)[:SHORTFALLS_PER_SITE].tolist():
            out.append(_shortfall(problem, s, int(off[e]), int(short[e])))
    return out


def _by_value(opt: _Options, keep: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(keep)
    return opt.site[idx[np.lexsort((opt.site[idx], -opt.value[idx]))]]


def _explain_single(problem: MarketProblem, pid: str, opt: _Options, left: np.ndarray):
    worth = opt.value > 0
    if not worth.any():
        best = int(opt.value.max())
        return _unassigned(
            pid,
            BlockReason.OUTVALUED,
            f"its best placement among {opt.n} eligible sites is worth {best} points: cost "
            "outweighs value at every eligible site",
        )
    if (worth & opt.fits).any():
        n = int((worth & opt.fits).sum())
        return _unassigned(
            pid,
            BlockReason.NOT_REACHED,
            f"it fits at {n} eligible sites, but the run was stopped (cancelled or out of time) "
            "before the last pass placed it",
        )
    full = _by_value(opt, worth)
    detail = (
        f"all {len(full)} eligible sites where it is worth placing lack free capacity once the "
        "assigned projects are served"
    )
    if len(full) > SHORTFALL_SITES:
        detail += f" (the best {SHORTFALL_SITES} are listed)"
    if int((~worth).sum()):
        detail += f"; at {int((~worth).sum())} more its cost outweighs its value"
    return _unassigned(
        pid, BlockReason.CAPACITY, detail, _row_shortfalls(problem, opt.row, full, left)
    )


def _explain_pair(problem, pid, j, o0: _Options, o1: _Options, left, pair):  # noqa: ANN001
    enc = problem.enc
    apart, cap, region = pair
    cdmo = enc.sites.cdmo
    every = np.ones(o0.n, bool), np.ones(o1.n, bool)
    c0, c1 = set(cdmo[o0.site].tolist()), set(cdmo[o1.site].tolist())
    if len(c0 | c1) == 1:
        name = enc.cdmo_ids[next(iter(c0))]
        return _unassigned(
            pid,
            BlockReason.NO_SECOND_SOURCE,
            f"every eligible site for both sources belongs to CDMO {name}; a second source "
            "must be at a different CDMO",
        )
    both = o0.take(every[0]) + o1.take(every[1])
    n_budget = cheapest_pair(*(both + (cdmo, region, apart[j], -1)))
    if n_budget < 0:
        regions = sorted({REGIONS[int(x)] for x in region[np.concatenate([o0.site, o1.site])]})
        return _unassigned(
            pid,
            BlockReason.NO_SECOND_SOURCE,
            "no two eligible sites at different CDMOs are in different regions (eligible "
            f"sites are in {', '.join(regions)}); its second source must be in another region "
            "than the primary",
        )
    if cap[j] >= 0 and n_budget > cap[j]:
        return _unassigned(
            pid,
            BlockReason.BUDGET,
            f"the cheapest pair of sources costs {n_budget / 100:.2f} together, over its budget "
            f"of {enc.project_budget[j]:.2f}",
        )
    args = (cdmo, region, apart[j], cap[j])
    a, _ = best_pair(*(both + args))
    if a < 0:
        return _unassigned(
            pid,
            BlockReason.OUTVALUED,
            "every pair of eligible sources is worth at most 0 points: cost outweighs value",
        )
    a, _ = best_pair(*(o0.take(o0.fits) + o1.take(o1.fits) + args))
    if a >= 0:
        return _unassigned(
            pid,
            BlockReason.NOT_REACHED,
            "a pair of sources fits, but the run was stopped (cancelled or out of time) before "
            "the last pass placed it",
        )
    full0, full1 = _by_value(o0, ~o0.fits), _by_value(o1, ~o1.fits)
    detail = (
        f"no pair of its eligible sources has room for both once the assigned projects are "
        f"served: {len(full0)} of {o0.n} sites lack room{_role_text(problem, o0.row)}, "
        f"{len(full1)} of {o1.n}{_role_text(problem, o1.row)}, and the sites with room do not "
        "pair (another CDMO"
        + (", another region" if apart[j] else "")
        + (", within budget" if cap[j] >= 0 else "")
        + ")"
    )
    shortfalls = _row_shortfalls(problem, o0.row, full0, left)
    shortfalls += _row_shortfalls(problem, o1.row, full1, left)
    return _unassigned(pid, BlockReason.CAPACITY, detail, shortfalls)


def explain(
    problem: MarketProblem, choice: np.ndarray, *, stop: Callable[[], bool] | None = None
) -> list[Unassigned]:
    """One Unassigned per project that ``choice`` leaves unplaced, in project order. Once
    ``stop()`` is true (a cancelled run), the rest are listed as not explained."""
    enc = problem.enc
    choice = np.asarray(choice, dtype=np.int64)
    site = row_sites(problem, choice)
    if stop is not None and stop():  # stopped already: no set-up (seconds at 100000 projects)
        return [
            _unassigned(enc.project_ids[j], BlockReason.NOT_EXPLAINED, "the run stopped first")
            for j in np.flatnonzero(site[enc.project_rows[:, 0]] < 0).tolist()
        ]
    left = free_left(enc, site)
    args = scan_args(enc, left, problem.params.weights.cost, FIT_MARKET)
    pair = pair_arrays(enc)
    counts = problem.scored.counts
    out: list[Unassigned] = []
    alone: dict[int, int] = {}  # position in `out` -> row needing capacity-alone shortfalls
    for j in np.flatnonzero(site[enc.project_rows[:, 0]] < 0).tolist():
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
        options = [_Options(problem, r, left, args) for r in rows]
        if len(rows) == 1:
            out.append(_explain_single(problem, pid, options[0], left))
        else:
            out.append(_explain_pair(problem, pid, j, options[0], options[1], left, pair))
    found = _alone_shortfalls(problem, list(alone.values()), stop)
    for pos, r in alone.items():
        out[pos] = out[pos].model_copy(update={"shortfalls": found[r]})
    return out
