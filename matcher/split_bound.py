"""A tighter bound than relaxing the capacities: Lagrangian decomposition with one 0-1
knapsack per congested resource.

Relaxing the capacities (``matcher.bound``) gives at best the LP bound of the assignment
formulation: an item may fill a site's month with a fraction of itself. Here every use u of a
*split* resource r by candidate c gets a copy y_u of x_c, the capacity of r is written on the
copies alone, and the links y_u = x_c are relaxed with free multipliers w_u:

    L(w, lam) = sum_{r not split} lam_r cap_r
              + sum_i max over i's options of (value - sum_{u split} w_u - lam . use)
              + sum_{r split} max { sum_u w_u y_u : sum_u amt_u y_u <= cap_r, y binary }

Each knapsack is solved exactly by dynamic programming over the capacity, so L is an upper
bound on every feasible assignment and, at its best, the LP bound with the convex hull of every
split resource's knapsack: it counts that whole items fill a month, not fractions. With
w_u = lam_r amt_u a knapsack is worth at most lam_r cap_r, so starting from the capacity
Lagrangian's prices the decomposition is never looser; subgradient steps on w tighten it.

Capacities of thousands of hours would make the DP slow: a resource whose capacity exceeds
``split_states`` is solved in units of q = ceil(cap / split_states) hours, each amount rounded
*down* and the capacity too (a relaxation: any set of uses within cap also fits the rounded
knapsack, so the bound stays valid, only a little looser).

Split resources are those the capacity Lagrangian prices (lam_r > 0) whose candidates ask for
more than the capacity; all the others keep their prices (zero for most), which is valid for
any lam >= 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from matcher.bound import _items
from matcher.control import RunControl
from matcher.gap_lagrange import _knapsack
from matcher.model import AssignmentModel


@dataclass(frozen=True)
class Split:
    """The split resources and their knapsacks, as flat arrays.

    Uses of split resource s are ``uses[ptr[s]:ptr[s+1]]`` (indices into the model's use
    arrays), with ``weight`` the amounts in units of ``unit[s]`` hours (rounded down) and
    ``cap[s]`` the capacity in those units (rounded down); ``slot[u]`` is the position of use
    u in ``uses`` (-1 when its resource is not split) and ``owner[k]`` the candidate of
    ``uses[k]``."""

    res: np.ndarray  # int64 [n_split]
    ptr: np.ndarray  # int64 [n_split + 1]
    uses: np.ndarray  # int64 [n_slots]
    weight: np.ndarray  # int64 [n_slots]
    cap: np.ndarray  # int64 [n_split]
    unit: np.ndarray  # int64 [n_split]
    slot: np.ndarray  # int64 [n_use]
    owner: np.ndarray  # int64 [n_slots]

    @property
    def n_slots(self) -> int:
        return len(self.uses)


def _chosen(model: AssignmentModel, lam: np.ndarray) -> np.ndarray:
    """Which resources to split: priced by ``lam`` and asked for more than their capacity by
    the candidates (the others cannot bind, and pair rules stay in the pair subproblem)."""
    m = model
    demand = np.bincount(m.use_res, weights=m.use_amt, minlength=m.n_res)
    return (np.arange(m.n_res) < m.side_from) & (lam > 0) & (demand > m.capacity)


def _units(capacity: np.ndarray, states: int) -> np.ndarray:
    """Hours per DP unit of each capacity: the DP has at most ``states`` + 1 cells."""
    cap = capacity.astype(np.int64)
    return np.maximum(1, -(-cap // max(1, states))).astype(np.int64)


def split_work(model: AssignmentModel, lam: np.ndarray, states: int) -> int:
    """DP cells one step of the split bound fills (its cost): the sum over split resources of
    their uses x (their capacity in DP units + 1)."""
    m = model
    chosen = _chosen(m, np.asarray(lam, dtype=np.float64))
    n_uses = np.bincount(m.use_res[chosen[m.use_res]], minlength=m.n_res)[chosen]
    cap = m.capacity[chosen]
    return int((n_uses * (cap // _units(cap, states) + 1)).sum())


def fit_states(
    model: AssignmentModel, lam: np.ndarray, most: int, least: int, work: int
) -> int | None:
    """The most DP units per capacity (``most``, halved down to ``least``) whose step fills
    at most ``work`` cells (``split_work``); None when even ``least`` does not fit."""
    states = most
    while states > least and split_work(model, lam, states) > work:
        states //= 2
    return states if split_work(model, lam, states) <= work else None


def split_resources(model: AssignmentModel, lam: np.ndarray, states: int) -> Split:
    """The split resources (``_chosen``) and their knapsacks; ``states``: the most DP units
    of a capacity."""
    m = model
    res = np.flatnonzero(_chosen(m, lam)).astype(np.int64)
    pick = np.flatnonzero(np.isin(m.use_res, res))
    uses = pick[np.argsort(m.use_res[pick], kind="stable")].astype(np.int64)
    counts = np.bincount(np.searchsorted(res, m.use_res[uses]), minlength=len(res))
    ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    cap_h = m.capacity[res].astype(np.int64)
    unit = _units(cap_h, states)
    slot = np.full(len(m.use_res), -1, dtype=np.int64)
    slot[uses] = np.arange(len(uses))
    owner = np.repeat(np.arange(m.n_cand, dtype=np.int64), np.diff(m.use_ptr))[uses]
    return Split(
        res=res,
        ptr=ptr,
        uses=uses,
        weight=(m.use_amt[uses] // np.repeat(unit, counts)).astype(np.int64),
        cap=(cap_h // unit).astype(np.int64),
        unit=unit,
        slot=slot,
        owner=owner,
    )


@njit(cache=True)
def _split_value(
    w, lam, split_res, ptr, weight, cap, slot, capacity, cand_ptr, cand_value, use_ptr,
    use_res, use_amt, must_assign, fixed, outside_best, best_cand, partner, cand_bin,
    bin_group, side_from, red, terms, y, f, take, keep, neg,
):  # fmt: skip
    """L(w, lam) (module docstring); writes each item's best candidate into best_cand and the
    knapsacks' choices into y (1.0 / 0.0 per slot)."""
    total = 0.0
    is_split = np.zeros(len(capacity), np.bool_)
    for s in range(len(split_res)):
        is_split[split_res[s]] = True
    for r in range(side_from):
        if not is_split[r]:
            total += lam[r] * capacity[r]
    for c in range(len(cand_value)):
        v = float(cand_value[c])
        for u in range(use_ptr[c], use_ptr[c + 1]):
            k = slot[u]
            if k >= 0:
                v -= w[k]
            elif use_res[u] < side_from:
                v -= lam[use_res[u]] * use_amt[u]
        red[c] = v
    total += _items(
        red, capacity, cand_ptr, use_ptr, use_res, use_amt, must_assign, fixed, outside_best,
        best_cand, partner, cand_bin, bin_group, side_from, terms,
    )  # fmt: skip
    for s in range(len(split_res)):
        lo, hi = ptr[s], ptr[s + 1]
        n = hi - lo
        for j in range(n):
            neg[j] = -w[lo + j]  # the GAP knapsack minimises
        best = -_knapsack(neg[:n], weight[lo:hi], cap[s], f, take[:n], keep)
        total += best
        for j in range(n):
            y[lo + j] = 1.0 if take[j] else 0.0
    return total


@njit(cache=True)
def _split_steps(
    w, best_w, state, target, steps, lam, split_res, ptr, weight, cap, slot, owner, capacity,
    cand_ptr, cand_value, use_ptr, use_res, use_amt, must_assign, fixed, outside_best,
    partner, cand_bin, bin_group, side_from, f, keep,
):  # fmt: skip
    """``steps`` subgradient steps on w (lam fixed) from ``w`` (updated in place); ``state`` is
    [best bound, step scale, steps without improvement], carried between calls; ``best_w``
    receives the multipliers of the best bound. The subgradient of L in w_u is y_u - x_c."""
    n_items = len(cand_ptr) - 1
    n_slots = len(w)
    best_cand = np.empty(n_items, np.int64)
    red = np.empty(len(cand_value), np.float64)
    terms = np.empty(n_items, np.float64)
    y = np.empty(n_slots, np.float64)
    width = 1
    for s in range(len(split_res)):
        width = max(width, ptr[s + 1] - ptr[s])
    take = np.zeros(width, np.bool_)
    neg = np.empty(width, np.float64)
    chosen = np.zeros(len(cand_value), np.bool_)
    for _ in range(steps):
        bound = _split_value(
            w, lam, split_res, ptr, weight, cap, slot, capacity, cand_ptr, cand_value,
            use_ptr, use_res, use_amt, must_assign, fixed, outside_best, best_cand, partner,
            cand_bin, bin_group, side_from, red, terms, y, f, take, keep, neg,
        )  # fmt: skip
        if bound < state[0] - 1e-9:
            state[0] = bound
            best_w[:] = w
            state[2] = 0.0
        else:
            state[2] += 1.0
            if state[2] >= 5:
                state[1] *= 0.5
                state[2] = 0.0
                if state[1] < 1e-4:
                    break
        chosen[:] = False
        for i in range(n_items):
            if best_cand[i] >= 0:
                chosen[best_cand[i]] = True
        norm = 0.0
        for k in range(n_slots):
            g = y[k] - (1.0 if chosen[owner[k]] else 0.0)
            y[k] = g
            norm += g * g
        if norm == 0.0:
            state[1] = 0.0  # copies agree: this is an optimal (hence feasible) answer
            break
        step = state[1] * max(bound - target, 1e-6 * max(1.0, abs(bound))) / norm
        for k in range(n_slots):
            w[k] -= step * y[k]


def split_bound(
    model: AssignmentModel,
    lam: np.ndarray,
    target: float,
    *,
    states: int,
    max_steps: int,
    time_limit_s: float | None,
    control: RunControl | None = None,
    theta: float = 1.0,
    chunk: int = 5,
) -> tuple[int, int]:
    """An integer upper bound on the model's optimum (with its outside options, so valid for
    the whole market like the capacity Lagrangian), from capacity prices ``lam`` (the
    starting point: never looser than L(lam)); subgradient steps on the split multipliers
    towards ``target`` (a feasible objective) until ``max_steps``, ``time_limit_s`` (None:
    every step) or a cancel of ``control``. Returns (bound, steps taken)."""
    m = model
    lam = np.asarray(lam, dtype=np.float64)
    sp = split_resources(m, lam, states)
    w = (lam[m.use_res[sp.uses]] * m.use_amt[sp.uses]).astype(np.float64)
    best_w = w.copy()
    width = int(np.diff(sp.ptr).max()) if len(sp.res) else 1
    f = np.empty(int(sp.cap.max()) + 1 if len(sp.res) else 1, np.float64)
    keep = np.empty((max(1, width), len(f)), np.bool_)
    # Multipliers are fitted with the outside options hidden (as matcher.bound does: an item
    # would otherwise just leave congested resources at no cost), then evaluated with them.
    no_outside = np.full(m.n_items, np.iinfo(np.int64).min // 4)
    state = np.array([np.inf, theta, 0.0])
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    done = 0
    while done < max_steps and len(sp.res):
        n = min(chunk, max_steps - done)
        _split_steps(
            w, best_w, state, float(target), n, lam, sp.res, sp.ptr, sp.weight, sp.cap,
            sp.slot, sp.owner, m.capacity, m.cand_ptr, m.cand_value, m.use_ptr, m.use_res,
            m.use_amt, m.must_assign, m.fixed, no_outside, m.partner, m.cand_bin,
            m.bin_group, m.side_from, f, keep,
        )  # fmt: skip
        done += n
        if state[1] < 1e-4:
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        if control is not None and (control.cancelled or control.run_over()):
            break
    width = max(1, width)
    total = _split_value(
        best_w, lam, sp.res, sp.ptr, sp.weight, sp.cap, sp.slot, m.capacity, m.cand_ptr,
        m.cand_value, m.use_ptr, m.use_res, m.use_amt, m.must_assign, m.fixed,
        m.outside_best, np.empty(m.n_items, np.int64), m.partner, m.cand_bin, m.bin_group,
        m.side_from, np.empty(m.n_cand, np.float64), np.empty(m.n_items, np.float64),
        np.empty(sp.n_slots, np.float64), f, np.zeros(width, np.bool_), keep,
        np.empty(width, np.float64),
    )  # fmt: skip
    # DP sums of floats: a relative 1e-9 absorbs their rounding before rounding down.
    return int(np.floor(total + 1e-9 * max(1.0, abs(total)) + 1e-6)), done


def warm_up() -> None:
    """Compile (or load) the split bound's steps on a two-item model: the market's runs
    that reach it must not pay JIT time."""
    model = AssignmentModel(
        capacity=np.array([1], np.int64),
        cand_ptr=np.array([0, 1, 2], np.int64),
        cand_bin=np.zeros(2, np.int32),
        cand_value=np.array([3, 2], np.int64),
        use_ptr=np.array([0, 1, 2], np.int64),
        use_res=np.zeros(2, np.int32),
        use_amt=np.ones(2, np.int64),
        must_assign=np.zeros(2, np.bool_),
        partner=np.full(2, -1, np.int32),
        bin_group=np.zeros(1, np.int32),
        fixed=np.full(2, -1, np.int64),
        hint=np.full(2, -1, np.int64),
    )
    split_bound(model, np.ones(1), 3.0, states=8, max_steps=2, time_limit_s=None)
