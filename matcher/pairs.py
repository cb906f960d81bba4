"""The rules between the two sources of a project, written as resources of the generic model.

A project that needs a second source is two linked rows (primary and second). Two of its rules
join the pair rather than one row, and both are expressed as extra ("side") resources, so that
every solver part (greedy, local search, Lagrangian bound, CP-SAT, LNS) and the verifier obey
them without knowing they exist:

* separation: by default the two sources are at different CDMOs (the model's ``bin_group``)
  in different regions (``SecondSourceSeparation.REGION``). For each such project and region,
  a resource of capacity 1 that every candidate of either row in that region uses once: the two
  rows can never share a region. A project may relax this to different CDMOs only.
* budget: what the maker pays is the blended cost of the two sources (each row's cost is
  already its share of the load at its site's prices), so the ceiling bounds their sum: one
  resource per budgeted project, capacity the ceiling and each candidate using its cost, in
  whole ``BUDGET_UNIT`` (costs rounded up, the ceiling down: a model-feasible pair is within
  budget in real money). Each row alone is also held to the whole ceiling by the kernels.

Side resources get keys above every site resource (``side_base``): ``side_base + project *
SIDE_SLOTS + slot``, slot 0 the budget and 1 + region the separation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from matcher.model import concat_ranges

BUDGET_UNIT = 0.01  # currency per budget unit: a cent
_TOL = 1e-6
N_REGIONS = 5  # len(schemas.market.Region); checked in matcher.problem
SIDE_SLOTS = 1 + N_REGIONS


@njit(cache=True)
def budget_units(cost: float) -> np.int64:
    """Budget units a cost uses (rounded up)."""
    return np.int64(np.ceil(cost / BUDGET_UNIT - _TOL))


def budget_capacity(ceiling: np.ndarray) -> np.ndarray:
    """Budget units ceilings allow (rounded down)."""
    return np.floor(np.asarray(ceiling, dtype=np.float64) / BUDGET_UNIT + _TOL).astype(np.int64)


def side_uses(
    project_rows: np.ndarray,
    row_project: np.ndarray,
    apart_region: np.ndarray,
    pair_budget: np.ndarray,
    site_region: np.ndarray,
    cand_ptr: np.ndarray,
    cand_site: np.ndarray,
    cand_cost: np.ndarray,
    side_base: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """Side-resource uses of every candidate: (candidate, key, amount) arrays sorted by
    candidate, and the capacity of every side key used."""
    n_rows = len(cand_ptr) - 1
    paired = np.flatnonzero(project_rows[:, 1] >= 0)
    if paired.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, {}
    rows = np.sort(project_rows[paired].reshape(-1)).astype(np.int64)
    cands = concat_ranges(cand_ptr[rows], cand_ptr[rows + 1])
    cand_row = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(cand_ptr))[cands]
    project = row_project[cand_row].astype(np.int64)
    base = side_base + project * SIDE_SLOTS
    parts_c, parts_k, parts_a = [], [], []
    caps: dict[int, int] = {}
    apart = apart_region[project]
    if apart.any():
        c = cands[apart]
        parts_c.append(c)
        parts_k.append(base[apart] + 1 + site_region[cand_site[c]].astype(np.int64))
        parts_a.append(np.ones(len(c), dtype=np.int64))
        caps.update(dict.fromkeys(np.unique(parts_k[-1]).tolist(), 1))
    budgeted = np.isfinite(pair_budget[project])
    if budgeted.any():
        c = cands[budgeted]
        parts_c.append(c)
        parts_k.append(base[budgeted])
        units = np.ceil(cand_cost[c] / BUDGET_UNIT - _TOL).astype(np.int64)
        parts_a.append(units)
        for j in np.unique(project[budgeted]).tolist():
            caps[side_base + j * SIDE_SLOTS] = int(budget_capacity(pair_budget[j]))
    if not parts_c:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, {}
    c_all = np.concatenate(parts_c)
    order = np.argsort(c_all, kind="stable")
    return c_all[order], np.concatenate(parts_k)[order], np.concatenate(parts_a)[order], caps


def side_resources(enc, scored):  # noqa: ANN001, ANN201
    """The side resources of ``scored``'s candidates: ``(side_ptr, side_index, side_amt,
    keys, capacity)``, the uses as a CSR per candidate (``side_ptr`` [n_cand + 1]; each use
    the index of its resource among the side resources, sorted by key, and its amount) and
    each side resource's key and capacity. ``matcher.problem.assemble`` appends them after
    each candidate's site uses, as resources ``n_site_resources + index``."""
    side_base = enc.sites.free.size
    site_region = np.log2(enc.sites.region_bit.astype(np.float64)).astype(np.int64)
    side_cand, side_key, side_amt, side_cap = side_uses(
        enc.project_rows, enc.row_project, enc.project_apart_region, enc.project_budget,
        site_region, scored.cand_ptr, scored.cand_site, scored.cand_cost, side_base,
    )  # fmt: skip
    n_cand = len(scored.cand_site)
    side_ptr = np.zeros(n_cand + 1, dtype=np.int64)
    np.cumsum(np.bincount(side_cand, minlength=n_cand), out=side_ptr[1:])
    keys = np.array(sorted(side_cap), dtype=np.int64)
    capacity = np.array([side_cap[k] for k in keys.tolist()], dtype=np.int64)
    index = np.searchsorted(keys, side_key).astype(np.int64)
    return side_ptr, index, np.asarray(side_amt, dtype=np.int64), keys, capacity
