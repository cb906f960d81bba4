"""A proven upper bound by Lagrangian relaxation of the capacity constraints.

For prices lam >= 0 on the resources,

    L(lam) = sum_r lam_r * cap_r + sum_i max over i's options of (value - lam . use)

is an upper bound on every feasible assignment. Options of an item are its candidates, leaving
it out (worth 0) unless it must be assigned, and ``outside_best`` (any eligible pair cut from
the candidate list is worth at most that, and its reduced value only less since lam, use >= 0).
A linked pair of items (a project and its second source) is one subproblem, solved exactly by
enumerating its candidate pairs: both placed or neither, in different bin groups (CDMOs), and
within the pair-rule resources (``model.side_from`` on: region separation, blended budget),
which are therefore never priced. Pricing them instead (capacity 1 per region, budgets in
cents) swamped the subgradient's step with the budgets' cent-sized violations and left the
bound 0.6 % looser on a 20000 x 2000 market; the pair subproblem is also tighter than dropping
the links. Subgradient steps (Held-Karp / Polyak) tighten it; the best prices found also rank
candidates for the greedy (a Lagrangian heuristic).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from matcher.control import NO_STOP, RunControl, SolveParams
from matcher.kernels import NO_VALUE
from matcher.model import AssignmentModel


@njit(cache=True)
def _reduced(c, lam, cand_value, use_ptr, use_res, use_amt, side_from):
    """value - lam . use of candidate c (pair-rule resources are never priced)."""
    red = float(cand_value[c])
    for u in range(use_ptr[c], use_ptr[c + 1]):
        r = use_res[u]
        if r < side_from:
            red -= lam[r] * use_amt[u]
    return red


@njit(cache=True)
def _side_fits(c, d, capacity, use_ptr, use_res, use_amt, side_from):
    """Whether candidates c and d (d = -1: c alone) together fit every pair-rule resource
    they use. Pair-rule uses come last in a candidate's uses, so the scans stop early."""
    for u in range(use_ptr[c + 1] - 1, use_ptr[c] - 1, -1):
        r = use_res[u]
        if r < side_from:
            break
        amt = use_amt[u]
        if d >= 0:
            for v in range(use_ptr[d + 1] - 1, use_ptr[d] - 1, -1):
                if use_res[v] < side_from:
                    break
                if use_res[v] == r:
                    amt += use_amt[v]
        if amt > capacity[r]:
            return False
    if d >= 0:
        for v in range(use_ptr[d + 1] - 1, use_ptr[d] - 1, -1):
            r = use_res[v]
            if r < side_from:
                break
            if use_amt[v] > capacity[r]:
                return False
    return True


@njit(cache=True)
def _lagrangian(
    lam,
    capacity,
    cand_ptr,
    cand_value,
    use_ptr,
    use_res,
    use_amt,
    must_assign,
    fixed,
    outside_best,
    best_cand,
    partner,
    cand_bin,
    bin_group,
    side_from,
    red,
    terms,
):
    """Returns L(lam); writes the maximising candidate of each item (or -1) into best_cand
    (``_items``)."""
    total = 0.0
    for r in range(side_from):
        total += lam[r] * capacity[r]
    for c in range(len(cand_value)):  # reduced values once (``red``: a buffer, n_cand)
        red[c] = _reduced(c, lam, cand_value, use_ptr, use_res, use_amt, side_from)
    return total + _items(
        red, capacity, cand_ptr, use_ptr, use_res, use_amt, must_assign, fixed, outside_best,
        best_cand, partner, cand_bin, bin_group, side_from, terms,
    )  # fmt: skip


@njit(cache=True)
def _items(
    red,
    capacity,
    cand_ptr,
    use_ptr,
    use_res,
    use_amt,
    must_assign,
    fixed,
    outside_best,
    best_cand,
    partner,
    cand_bin,
    bin_group,
    side_from,
    terms,
):
    """The items' part of a Lagrangian: the sum over items (linked pairs together) of their
    best option by reduced value ``red`` (candidates, staying out, ``outside_best``); writes
    the maximising candidate of each item (or -1) into best_cand and each term into terms.

    A linked pair (second source) is one subproblem: both placed or neither, in different
    bin groups, within the pair-rule resources (region, budget), each option its candidates
    or ``outside_best`` (no check possible there: a relaxation)."""
    n = len(cand_ptr) - 1
    total = 0.0
    for i in range(n):
        p = partner[i]
        if p >= 0 and p < i:
            continue  # solved with its partner
        if p < 0:
            best = -1e300
            bc = -1
            if fixed[i] < 0 and not must_assign[i]:
                best = 0.0
            if fixed[i] < 0 and outside_best[i] > best:
                best = float(outside_best[i])
            lo = cand_ptr[i]
            hi = cand_ptr[i + 1]
            if fixed[i] >= 0:
                lo = fixed[i]
                hi = fixed[i] + 1
            for c in range(lo, hi):
                if red[c] > best and (
                    side_from >= len(capacity)
                    or _side_fits(c, -1, capacity, use_ptr, use_res, use_amt, side_from)
                ):
                    best = red[c]
                    bc = c
            best_cand[i] = bc
            terms[i] = best
            total += best
            continue
        # The pair (i, p): options of each side are its candidates (or its pin) and the
        # outside option (index -1 below, value outside_best, no rule checked).
        best = -1e300
        bi = -1
        bp = -1
        if fixed[i] < 0 and fixed[p] < 0 and not must_assign[i] and not must_assign[p]:
            best = 0.0
        lo_i, hi_i = cand_ptr[i], cand_ptr[i + 1]
        if fixed[i] >= 0:
            lo_i, hi_i = fixed[i], fixed[i] + 1
        lo_p, hi_p = cand_ptr[p], cand_ptr[p + 1]
        if fixed[p] >= 0:
            lo_p, hi_p = fixed[p], fixed[p] + 1
        out_i = float(outside_best[i]) if fixed[i] < 0 else -1e300
        out_p = float(outside_best[p]) if fixed[p] < 0 else -1e300
        best_p_alone = out_p  # best option of p with i outside: any candidate or outside
        arg_p_alone = -1
        for d in range(lo_p, hi_p):
            if red[d] > best_p_alone:
                best_p_alone = red[d]
                arg_p_alone = d
        if out_i + best_p_alone > best:
            best = out_i + best_p_alone
            bi = -1
            bp = arg_p_alone
        for c in range(lo_i, hi_i):
            rc = red[c]
            if rc + out_p > best:
                best = rc + out_p
                bi = c
                bp = -1
            if rc + best_p_alone <= best:
                continue  # no partner option can beat the best pair so far
            gc = bin_group[cand_bin[c]]
            for d in range(lo_p, hi_p):
                rd = red[d]
                if rc + rd <= best or bin_group[cand_bin[d]] == gc:
                    continue
                if _side_fits(c, d, capacity, use_ptr, use_res, use_amt, side_from):
                    best = rc + rd
                    bi = c
                    bp = d
        best_cand[i] = bi
        best_cand[p] = bp
        terms[i] = best  # the pair's term, on its first item
        terms[p] = 0.0
        total += best
    return total


@njit(cache=True, nogil=True)
def _subgradient(
    capacity,
    cand_ptr,
    cand_value,
    use_ptr,
    use_res,
    use_amt,
    must_assign,
    fixed,
    outside_best,
    target,
    iterations,
    lam,
    best_lam,
    state,
    partner,
    cand_bin,
    bin_group,
    side_from,
    stop,
):
    """``iterations`` subgradient steps from prices ``lam`` (updated in place). ``state`` is
    [best bound so far, step scale theta, iterations without improvement], carried from one
    call to the next (the caller checks the clock between calls); ``best_lam`` receives the
    prices of the best bound. ``stop[0]`` (a run's cancel flag) set ends it after the current
    pass (a step at 100000 x 10000 is a pass over millions of uses)."""
    n = len(cand_ptr) - 1
    best_cand = np.empty(n, np.int64)
    red = np.empty(len(cand_value), np.float64)
    terms = np.empty(n, np.float64)
    best_bound = state[0]
    theta = state[1]
    stall = int(state[2])
    usage = np.zeros(len(capacity), np.float64)
    for _ in range(iterations):
        if stop[0]:
            break
        bound = _lagrangian(
            lam,
            capacity,
            cand_ptr,
            cand_value,
            use_ptr,
            use_res,
            use_amt,
            must_assign,
            fixed,
            outside_best,
            best_cand,
            partner,
            cand_bin,
            bin_group,
            side_from,
            red,
            terms,
        )
        if stop[0]:
            break
        if bound < best_bound - 1e-9:
            best_bound = bound
            best_lam[:] = lam
            stall = 0
        else:
            stall += 1
            if stall >= 5:
                theta *= 0.5
                stall = 0
                if theta < 1e-4:
                    break
        usage[:] = 0.0
        for i in range(n):
            c = best_cand[i]
            if c >= 0:
                for u in range(use_ptr[c], use_ptr[c + 1]):
                    usage[use_res[u]] += use_amt[u]
        norm = 0.0
        for r in range(len(capacity)):
            g = capacity[r] - usage[r]
            if r >= side_from:
                g = 0.0  # pair rules: enforced in the pair subproblem, never priced
            if lam[r] <= 0.0 and g > 0:
                g = 0.0  # projected: the price cannot go below zero anyway
            usage[r] = g
            norm += g * g
        if norm == 0.0:
            theta = 0.0  # the relaxed solution is feasible: these prices cannot do better
            break
        # Polyak step towards the target: the incumbent, or without one (target = -inf) a
        # moving estimate 5% below the best bound so far.
        goal = target if target > -1e299 else best_bound - 0.05 * max(1.0, abs(best_bound))
        step = theta * max(bound - goal, 1e-6 * max(1.0, abs(bound))) / norm
        for r in range(len(capacity)):
            lam[r] = max(0.0, lam[r] - step * usage[r])
    state[0] = best_bound
    state[1] = theta
    state[2] = stall


def lagrangian_bound(
    model: AssignmentModel,
    incumbent: float | None,
    *,
    iterations: int = 300,
    time_limit_s: float | None = 5.0,
    params: SolveParams | None = None,
    control: RunControl | None = None,
    start: np.ndarray | None = None,
    theta: float = 1.0,
) -> tuple[int, np.ndarray]:
    """An integer upper bound on the model's optimum, and the best resource prices found.

    ``incumbent`` (a feasible objective, if one is known) is the Polyak step target.
    ``start``: prices to start from (e.g. a solve's, to go on tightening them), with step
    scale ``theta``. ``time_limit_s=None`` runs every iteration (deterministic); a cancel of
    ``control``
    stops it after the current chunk of steps.
    """
    params = params or SolveParams()
    m = model
    lam = np.zeros(m.n_res, dtype=np.float64) if start is None else np.array(start, np.float64)
    if incumbent is None:
        incumbent = -np.inf
    # Prices are fitted to the candidates alone: an unpriced outside option would hide every
    # congested resource from the subgradient (the item just "leaves" at no cost). The bound
    # is then evaluated with the outside options, so it stays valid for the whole market.
    no_outside = np.full(m.n_items, np.iinfo(np.int64).min // 4)
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    best_lam = lam.copy()
    state = np.array([np.inf, theta, 0.0])  # best bound, step scale, stalled iterations
    # Check the clock about every ``bound_check_uses`` of work (a few hundredths of a second).
    chunk = int(max(1, min(50, params.bound_check_uses // max(1, len(m.use_res)))))
    huge = len(m.use_res) > params.bound_huge_uses
    min_steps = params.bound_min_steps_huge if huge else params.bound_min_steps
    done = 0
    while done < iterations:
        _subgradient(
            m.capacity,
            m.cand_ptr,
            m.cand_value,
            m.use_ptr,
            m.use_res,
            m.use_amt,
            m.must_assign,
            m.fixed,
            no_outside,
            float(incumbent),
            min(chunk, iterations - done),
            lam,
            best_lam,
            state,
            m.partner,
            m.cand_bin,
            m.bin_group,
            m.side_from,
            NO_STOP if control is None else control.flag,
        )
        done += chunk
        if state[1] < 1e-4:
            break
        # Prices need a few dozen steps to mean anything (column generation relies on them),
        # so the clock is only obeyed after those, fewer on huge models.
        if deadline is not None and time.perf_counter() > deadline and done >= min_steps:
            break
        if control is not None and (control.cancelled or control.run_over()):
            break  # the whole run's deadline is never overrun for the first steps
    lam = best_lam
    if control is not None and control.cancelled:
        # The evaluation with the outside options is one more pass over every use: a
        # cancelled run takes L(0), the per-item bound, which costs nothing and holds too.
        return item_bound(m), lam
    best = _lagrangian(
        lam,
        m.capacity,
        m.cand_ptr,
        m.cand_value,
        m.use_ptr,
        m.use_res,
        m.use_amt,
        m.must_assign,
        m.fixed,
        m.outside_best,
        np.empty(m.n_items, np.int64),
        m.partner,
        m.cand_bin,
        m.bin_group,
        m.side_from,
        np.empty(m.n_cand, np.float64),
        np.empty(m.n_items, np.float64),
    )
    # Values are integers, so the optimum is at most floor(L); the epsilon absorbs rounding.
    return int(np.floor(best + 1e-6)), lam


def item_bound(model: AssignmentModel) -> int:
    """Sum over items of their best option (a candidate, ``outside_best``, or 0 when they
    may stay out): the Lagrangian at zero prices, a bound that holds for any answer, at no
    cost."""
    best = np.where(model.must_assign, NO_VALUE, np.maximum(model.outside_best, 0))
    has = np.diff(model.cand_ptr) > 0
    if has.any():
        top = np.maximum.reduceat(model.cand_value, model.cand_ptr[:-1][has])
        best[has] = np.maximum(best[has], top)
    return int(best[best > NO_VALUE].sum())


def lagrangian_terms(model: AssignmentModel, lam: np.ndarray) -> tuple[float, np.ndarray]:
    """L(lam) (with the outside options) and each item's term in it (a linked pair's term
    on its first item, 0 on the other): an item known to stay out of every feasible answer
    may have its term (>= 0 when it may stay out) taken off, and what is left still bounds."""
    m = model
    terms = np.empty(m.n_items, np.float64)
    total = _lagrangian(
        np.asarray(lam, dtype=np.float64), m.capacity, m.cand_ptr, m.cand_value, m.use_ptr,
        m.use_res, m.use_amt, m.must_assign, m.fixed, m.outside_best,
        np.empty(m.n_items, np.int64), m.partner, m.cand_bin, m.bin_group, m.side_from,
        np.empty(m.n_cand, np.float64), terms,
    )  # fmt: skip
    return float(total), terms


def reduced_values(model: AssignmentModel, lam: np.ndarray) -> np.ndarray:
    """value - lam . use for every candidate: what the greedy ranks by."""
    m = model
    cand_of_use = np.repeat(np.arange(m.n_cand), np.diff(m.use_ptr))
    priced = np.bincount(cand_of_use, weights=m.use_amt * lam[m.use_res], minlength=m.n_cand)
    return m.cand_value - priced


def lp_bound(model: AssignmentModel, time_limit_s: float) -> int | None:
    """The LP relaxation's optimum with the second-source links, as an integer upper bound
    over the whole market (None when the LP is not solved to optimality in time).

    Tighter than the Lagrangian (whose best is the LP *without* the links, and which the
    subgradient only approaches): an item may take a fraction of each candidate, or of its
    ``outside_best`` (any eligible pair left out of its list: no capacity used, so a
    relaxation); a linked pair is placed to the same extent; the two halves of a pair take at
    most one unit together in any bin group (CDMO); pins are kept. GLOP's optimum is exact up
    to its tolerances, so a relative 1e-6 is added before rounding down.
    """
    from ortools.linear_solver import pywraplp

    m = model
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:
        return None
    solver.SetTimeLimit(max(1, int(1000 * time_limit_s)))
    x = [solver.NumVar(0.0, 1.0, "") for _ in range(m.n_cand)]
    value = m.cand_value.tolist()
    outside = m.outside_best.tolist()
    ptr = m.cand_ptr.tolist()
    objective = solver.Objective()
    for c, v in enumerate(value):
        objective.SetCoefficient(x[c], float(v))
    placed: list = []  # per item: its candidates' variables, plus the outside one
    for i in range(m.n_items):
        own = x[ptr[i] : ptr[i + 1]]
        if outside[i] > 0:
            o = solver.NumVar(0.0, 1.0, "")
            objective.SetCoefficient(o, float(outside[i]))
            own = [*own, o]
        placed.append(own)
        if own:
            row = solver.Constraint(1.0 if m.must_assign[i] else 0.0, 1.0)
            for var in own:
                row.SetCoefficient(var, 1.0)
        elif m.must_assign[i]:
            return None  # infeasible: nothing to bound
    cand_of_use = np.repeat(np.arange(m.n_cand), np.diff(m.use_ptr))
    order = np.argsort(m.use_res, kind="stable")
    res_sorted = m.use_res[order]
    cuts = np.flatnonzero(np.diff(res_sorted)) + 1
    demand = np.bincount(m.use_res, weights=m.use_amt, minlength=m.n_res)
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(order)], strict=True):
        if hi <= lo:
            continue
        r = int(res_sorted[lo])
        if demand[r] <= m.capacity[r]:
            continue  # cannot bind
        row = solver.Constraint(-solver.infinity(), float(m.capacity[r]))
        for u in order[lo:hi].tolist():
            row.SetCoefficient(x[int(cand_of_use[u])], float(m.use_amt[u]))
    groups = m.bin_group[m.cand_bin].tolist()
    for i in np.flatnonzero(m.partner > np.arange(m.n_items)).tolist():
        p = int(m.partner[i])
        link = solver.Constraint(0.0, 0.0)
        for var in placed[i]:
            link.SetCoefficient(var, 1.0)
        for var in placed[p]:
            link.SetCoefficient(var, link.GetCoefficient(var) - 1.0)
        by_group: dict[int, list] = {}
        for c in [*range(ptr[i], ptr[i + 1]), *range(ptr[p], ptr[p + 1])]:
            by_group.setdefault(groups[c], []).append(x[c])
        for members in by_group.values():
            if len(members) > 1:
                row = solver.Constraint(0.0, 1.0)
                for var in members:
                    row.SetCoefficient(var, 1.0)
    for c in m.fixed[m.fixed >= 0].tolist():
        x[c].SetLb(1.0)
    objective.SetMaximization()
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    best = objective.Value()
    return int(np.floor(best + 1e-6 * max(1.0, abs(best)) + 1e-6))
