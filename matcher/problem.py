"""Candidates -> the generic AssignmentModel, and what is needed to map an answer back.

``build_problem`` = ``encode`` (matcher/encode.py) + the kernels' candidate lists +
``assemble``: resource uses of every candidate, second-source links, previous proposals as
hints, and pins (honoured while they stay feasible, otherwise a note says why not). Column
generation and the market bound live in matcher/pricing.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from matcher import kernels
from matcher.control import RunControl, Stopped
from matcher.encode import (  # re-exported: imported from here by callers and tests
    CATEGORIES,
    CERT_KINDS,
    CLASSES,
    FIT_MARKET,
    FIT_QUALITY,
    HOURS_TOL,
    MAX_HORIZON_MONTHS,
    N_PROC,
    PROCESSES,
    REGIONS,
    ROLE_PRIMARY,
    ROLE_SECOND,
    Encoded,
    SiteTable,
    SnapshotError,
    encode,
    encode_sites,
    site_quality,
)
from matcher.kernels import Scored
from matcher.model import NONE, AssignmentModel
from matcher.pairs import side_resources
from schemas.market import MarketSnapshot, RunParams

__all__ = [
    "CATEGORIES",
    "CERT_KINDS",
    "CLASSES",
    "FIT_MARKET",
    "FIT_QUALITY",
    "HOURS_TOL",
    "MAX_HORIZON_MONTHS",
    "N_PROC",
    "PROCESSES",
    "REGIONS",
    "ROLE_PRIMARY",
    "ROLE_SECOND",
    "Encoded",
    "MarketProblem",
    "SiteTable",
    "SnapshotError",
    "assemble",
    "build_problem",
    "encode",
    "encode_sites",
    "find_candidates",
    "site_quality",
]


# Candidates whose resource uses are written between two checks of the cancel flag: ~2M
# uses, about 0.05 s (0.2 s at load 10) at 100000 x 10000, where the whole is ~1.5 s.
CANDS_PER_CHECK = 1 << 17


@njit(cache=True, nogil=True)
def _fill_uses(
    lo, hi, cand_row, cand_site, pos_ptr, pos_ent, ent_off, ent_units, pt, side_ptr, side_index,
    side_amt, use_ptr, keys, amts, used,
):  # fmt: skip
    """Uses of candidates ``lo:hi``: its row's positive loads at its site (key site x
    [process x month], marked in ``used``), then its side uses (key -1 - side index)."""
    for c in range(lo, hi):
        r = cand_row[c]
        base = cand_site[c] * pt
        at = use_ptr[c]
        for k in range(pos_ptr[r], pos_ptr[r + 1]):
            e = pos_ent[k]
            key = base + ent_off[e]
            keys[at] = key
            amts[at] = ent_units[e]
            used[key] = True
            at += 1
        for u in range(side_ptr[c], side_ptr[c + 1]):
            keys[at] = -1 - side_index[u]
            amts[at] = side_amt[u]
            at += 1


@njit(cache=True)
def _resource_ids(lo, hi, keys, res_id, n_site_res, out):
    """Model resource of uses ``lo:hi``: site keys through ``res_id``, side uses after every
    site resource."""
    for u in range(lo, hi):
        k = keys[u]
        out[u] = res_id[k] if k >= 0 else n_site_res - 1 - k


@dataclass(frozen=True)
class MarketProblem:
    model: AssignmentModel
    enc: Encoded
    scored: Scored
    cand_cost: np.ndarray  # float64 [n_cand], cost in currency at the candidate's site
    # int64 [n_res]: site * (N_PROC * months) + process * months + month; side resources
    # (matcher.pairs) come last, with keys from sites x N_PROC x months up.
    res_key: np.ndarray
    notes: list[str]
    timings: dict[str, float]
    stats: dict[str, float]
    params: RunParams

    def resource(self, r: int) -> tuple[int, int, int]:
        """(site, process, horizon month) of resource ``r``."""
        t = self.enc.n_months
        key = int(self.res_key[r])
        return key // (N_PROC * t), (key // t) % N_PROC, key % t


def find_candidates(model_ptr: np.ndarray, cand_site: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Candidate index of site ``want[i]`` in row i's list, or NONE."""
    out = np.full(len(want), NONE, dtype=np.int64)
    cand_row = np.repeat(np.arange(len(want)), np.diff(model_ptr))
    hit = np.flatnonzero((want[cand_row] >= 0) & (cand_site == want[cand_row]))
    out[cand_row[hit]] = hit
    return out


def score(
    enc: Encoded,
    params: RunParams,
    *,
    k: int | None = None,
    dual: np.ndarray | None = None,
    control: RunControl | None = None,
    stop: Callable[[], bool] | None = None,
) -> kernels.Scored:
    """The kernels' pass over every pair of ``enc``: each row's best ``k`` sites (default: the
    run's candidates per project) by value, or by reduced value under ``dual`` site prices.
    A cancel of ``control``, or ``stop()`` turning true, stops it between chunks of rows
    (``matcher.control.Stopped``)."""
    if stop is None and control is not None:
        stop = lambda: control.cancelled  # noqa: E731
    lanes = kernels.method_for(enc.rows, enc.sites) == "lanes"
    return kernels.score_pairs(
        enc.sites,
        enc.rows,
        enc.words,
        k=params.candidates_per_project if k is None else k,
        w_cost=params.weights.cost,
        fit_market=FIT_MARKET,
        dual=dual,
        stop=stop,
        layout=enc.lanes if lanes else None,
    )


def build_problem(
    snapshot: MarketSnapshot,
    params: RunParams,
    *,
    control: RunControl | None = None,
    site_table: SiteTable | None = None,
) -> MarketProblem:
    """Encode, score all pairs with the kernels, and build the AssignmentModel (progress is
    reported to ``control`` after each step; ``site_table`` may come from a cache). A cancel
    of ``control`` raises ``matcher.control.Stopped`` (after encoding, or between chunks of
    the kernel pass)."""
    t0 = time.perf_counter()
    enc = encode(
        snapshot, params, site_table, None if control is None else (lambda: control.cancelled)
    )
    t1 = time.perf_counter()
    if control is not None:
        control.report("encode")
        if control.cancelled:
            raise Stopped("cancelled after encoding")
    scored = score(enc, params, control=control)
    t2 = time.perf_counter()
    if control is not None:
        control.report("kernels")
    problem = assemble(enc, scored, params, control)
    problem.timings.update({"encode": t1 - t0, "kernels": t2 - t1})
    if control is not None:
        control.report("build")
    return problem


def drop_forbidden(enc: Encoded, scored: Scored) -> Scored:
    """``scored`` without the candidates of forbidden (row, site) pairs (declined by the CDMO
    or forbidden by an operator). ``outside_best`` is kept: still an upper bound."""
    if len(enc.forbidden) == 0:
        return scored
    n_rows = len(scored.cand_ptr) - 1
    cand_row = np.repeat(np.arange(n_rows), np.diff(scored.cand_ptr))
    n_sites = max(enc.sites.n_sites, 1)
    banned = np.isin(
        cand_row * n_sites + scored.cand_site.astype(np.int64),
        enc.forbidden[:, 0] * n_sites + enc.forbidden[:, 1],
    )
    if not banned.any():
        return scored
    keep = ~banned
    kept = np.bincount(cand_row[keep], minlength=n_rows)
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(kept, out=ptr[1:])
    # Counted as exclusions; a row left without candidates counts as having no eligible site.
    counts = scored.counts.copy()
    moved = np.bincount(cand_row[banned], minlength=n_rows)
    moved = np.where(kept == 0, counts[:, kernels.ELIGIBLE], moved)
    counts[:, kernels.R_EXCLUDED] += moved
    counts[:, kernels.ELIGIBLE] -= moved
    return replace(
        scored,
        cand_ptr=ptr,
        cand_site=scored.cand_site[keep],
        cand_value=scored.cand_value[keep],
        cand_cost=scored.cand_cost[keep],
        counts=counts,
    )


def assemble(
    enc: Encoded, scored: Scored, params: RunParams, control: RunControl | None = None
) -> MarketProblem:
    """The AssignmentModel of ``scored``'s candidate lists (forbidden pairs dropped). A cancel
    of ``control`` is checked between its steps (each under a second at 100000 x 10000)."""

    def check() -> None:
        if control is not None and control.cancelled:
            raise Stopped("cancelled while assembling the model")

    t2 = time.perf_counter()
    scored = drop_forbidden(enc, scored)
    check()
    sites, rows = enc.sites, enc.rows

    # Resource uses: every candidate uses its row's positive whole-hour loads at its site,
    # then its side resources (matcher.pairs: pair rules), written candidate by candidate in
    # chunks so that a cancel is heard between two (matcher.control: within a second).
    n_rows = rows.n_rows
    pos = rows.ent_units > 0
    pos_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    ent_row = np.repeat(np.arange(n_rows), np.diff(rows.ent_ptr))
    np.cumsum(np.bincount(ent_row[pos], minlength=n_rows), out=pos_ptr[1:])
    pos_ent = np.flatnonzero(pos)
    cand_row = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(scored.cand_ptr))
    side_ptr, side_index, side_amt, side_keys, side_cap = side_resources(enc, scored)
    check()
    n_cand = len(cand_row)
    use_ptr = np.zeros(n_cand + 1, dtype=np.int64)
    np.cumsum(np.diff(pos_ptr)[cand_row] + np.diff(side_ptr), out=use_ptr[1:])
    pt = N_PROC * enc.n_months
    keys = np.empty(int(use_ptr[-1]), dtype=np.int64)
    use_amt = np.empty(len(keys), dtype=np.int64)
    used = np.zeros(sites.n_sites * pt, dtype=np.bool_)
    cand_site = scored.cand_site.astype(np.int64)
    ent_off, ent_units = rows.ent_off.astype(np.int64), rows.ent_units.astype(np.int64)
    for lo in range(0, n_cand, CANDS_PER_CHECK):
        _fill_uses(
            lo, min(n_cand, lo + CANDS_PER_CHECK), cand_row, cand_site, pos_ptr, pos_ent,
            ent_off, ent_units, pt, side_ptr,
            side_index, side_amt, use_ptr, keys, use_amt, used,
        )  # fmt: skip
        check()
    res_key = np.flatnonzero(used)
    res_id = np.full(len(used), -1, dtype=np.int64)
    res_id[res_key] = np.arange(len(res_key))
    use_res = np.empty(len(keys), dtype=np.int32)
    for lo in range(0, n_cand, CANDS_PER_CHECK):
        hi = min(n_cand, lo + CANDS_PER_CHECK)
        _resource_ids(use_ptr[lo], use_ptr[hi], keys, res_id, len(res_key), use_res)
        check()
    del keys
    side_from = len(res_key)
    capacity = np.concatenate([sites.free.reshape(-1)[res_key].astype(np.int64), side_cap])
    res_key = np.concatenate([res_key, side_keys])

    check()
    partner = np.full(n_rows, NONE, dtype=np.int32)
    two = enc.project_rows[:, 1] >= 0
    partner[enc.project_rows[two, 0]] = enc.project_rows[two, 1]
    partner[enc.project_rows[two, 1]] = enc.project_rows[two, 0]

    hint = find_candidates(scored.cand_ptr, scored.cand_site, rows.prev.astype(np.int64))
    fixed, pin_notes = _accept_pins(enc, scored, capacity, use_ptr, use_res, use_amt)
    notes = enc.notes + pin_notes

    model = AssignmentModel(
        capacity=capacity,
        cand_ptr=scored.cand_ptr,
        cand_bin=scored.cand_site,
        cand_value=scored.cand_value,
        use_ptr=use_ptr,
        use_res=use_res,
        use_amt=use_amt,
        must_assign=np.zeros(n_rows, dtype=np.bool_),
        partner=partner,
        bin_group=sites.cdmo.astype(np.int32),
        fixed=fixed,
        hint=hint,
        outside_best=scored.outside_best,
        side_from=side_from,
    )
    t3 = time.perf_counter()
    counts = scored.counts
    stats = {
        "projects": float(len(enc.project_ids)),
        "sites": float(sites.n_sites),
        "months": float(enc.n_months),
        "pairs_evaluated": float(n_rows) * sites.n_sites,
        "eligible_pairs": float(counts[:, kernels.ELIGIBLE].sum()),
        "candidates": float(model.n_cand),
        "items": float(n_rows),
        "resources": float(model.n_res),
        "resource_uses": float(len(use_res)),
        "row_groups": float(len(rows.grp_cc)),
    }
    return MarketProblem(
        model=model,
        enc=enc,
        scored=scored,
        cand_cost=scored.cand_cost,
        res_key=res_key.astype(np.int64),
        notes=notes,
        timings={"model": t3 - t2},
        stats=stats,
        params=params,
    )


def _accept_pins(
    enc: Encoded,
    scored: Scored,
    capacity: np.ndarray,
    use_ptr: np.ndarray,
    use_res: np.ndarray,
    use_amt: np.ndarray,
) -> tuple[np.ndarray, list[str]]:
    """``fixed`` per row: pins are honoured, in snapshot order, while they stay feasible.

    A pin whose site is not eligible, of a second-source project without its second site,
    whose two sources share a CDMO, or that no longer fits next to the pins accepted before
    it is not forced (the model could be infeasible), and gets a note instead.
    """
    n_rows = enc.rows.n_rows
    fixed = np.full(n_rows, NONE, dtype=np.int64)
    notes: list[str] = []
    if not enc.pinned:
        return fixed, notes
    residual = capacity.copy()
    pin_site = enc.rows.force[:, 0].astype(np.int64)
    pin_cand = find_candidates(scored.cand_ptr, scored.cand_site, pin_site)
    for j, (site, second) in enc.pinned.items():
        pid = enc.project_ids[j]
        rows = [int(r) for r in enc.project_rows[j] if r >= 0]
        wanted = [(r, int(pin_site[r]), int(pin_cand[r])) for r in rows if pin_site[r] >= 0]
        missing = [enc.site_ids[s] for _, s, c in wanted if c == NONE]
        if missing:
            notes.append(f"pin of {pid} to {', '.join(missing)} not forced: site not eligible")
            continue
        if len(rows) == 2 and second < 0:
            # Forcing the primary alone could leave its partner no feasible site at all.
            notes.append(f"pin of {pid} not forced: it needs a second source, pin both sites")
            continue
        if second >= 0 and enc.sites.cdmo[site] == enc.sites.cdmo[second]:
            notes.append(f"pin of {pid} not forced: both sources are at the same CDMO")
            continue
        if (
            second >= 0
            and enc.project_apart_region[j]
            and enc.sites.region_bit[site] == enc.sites.region_bit[second]
        ):
            notes.append(f"pin of {pid} not forced: both sources are in the same region")
            continue
        use = np.concatenate([np.arange(use_ptr[c], use_ptr[c + 1]) for _, _, c in wanted])
        need = np.zeros(len(residual), dtype=np.int64)
        np.add.at(need, use_res[use], use_amt[use])
        if np.any(need > residual):
            notes.append(f"pin of {pid} not forced: it does not fit next to earlier pins")
            continue
        residual -= need
        for r, _, c in wanted:
            fixed[r] = c
    return fixed, notes
