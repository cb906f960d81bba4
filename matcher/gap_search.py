"""Penalised tabu search for the plain GAP (minimisation), in Numba.

In the spirit of Yagiura, Ibaraki and Glover: the search walks through infeasible assignments
too, scoring ``cost + sum_i p_i * overload_i`` with one adaptive penalty weight per agent
(raised while the agent is over capacity, lowered while the assignment is feasible), over
the shift (one job to another agent), swap (two jobs of different agents exchange agents)
and length-2 ejection chain (job j moves to agent b, which sends one of its jobs k on to a
third agent d; j and k only go to their ``near`` agents) neighbourhoods. A job that leaves
an agent may not come back for a random tenure (tabu), unless that gives a feasible answer
better than the best one. After a long stall the walk
restarts from the best answer with a few random shifts.

Moves are limited to the allowed pairs (``allowed[i, j]``), e.g. those the Lagrangian bound
does not rule out. Only feasible answers are ever kept as the best, and the best is never
worse than the start when the start is feasible.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _over(load: int, cap: int) -> int:
    return load - cap if load > cap else 0


@njit(cache=True)
def loads_of(weight, assign, m):
    load = np.zeros(m, dtype=np.int64)
    for j in range(assign.shape[0]):
        load[assign[j]] += weight[assign[j], j]
    return load


@njit(cache=True)
def _cost_and_overload(cost, capacity, assign, load):
    """The assignment's cost and its total load over capacity (the walk's two scores)."""
    cur = 0
    for j in range(assign.shape[0]):
        cur += cost[assign[j], j]
    over = 0
    for i in range(load.shape[0]):
        if load[i] > capacity[i]:
            over += load[i] - capacity[i]
    return cur, over


def nearest_agents(cost: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
    """Per job, its ``count`` cheapest allowed agents (int64 [n, count], -1 padded)."""
    m, n = cost.shape
    count = max(1, min(count, m))
    keyed = np.where(allowed, cost.astype(np.float64), np.inf)
    order = np.argsort(keyed, axis=0, kind="stable")[:count].T  # [n, count]
    ok = np.isfinite(np.take_along_axis(keyed.T, order, axis=1))
    return np.ascontiguousarray(np.where(ok, order, -1).astype(np.int64))


@njit(cache=True)
def greedy_start(cost, weight, capacity, allowed):
    """Jobs by decreasing regret (second-best minus best cost), each to its cheapest allowed
    agent with room, else to the allowed agent it overloads least."""
    m, n = cost.shape
    regret = np.empty(n)
    for j in range(n):
        b1 = 1e18
        b2 = 1e18
        for i in range(m):
            if allowed[i, j]:
                c = cost[i, j]
                if c < b1:
                    b2 = b1
                    b1 = c
                elif c < b2:
                    b2 = c
        regret[j] = (b2 - b1) if b2 < 1e18 else 1e18
    order = np.argsort(-regret)
    load = np.zeros(m, dtype=np.int64)
    assign = np.full(n, -1, dtype=np.int64)
    for t in range(n):
        j = order[t]
        best = -1
        best_c = 1e18
        for i in range(m):
            if allowed[i, j] and load[i] + weight[i, j] <= capacity[i] and cost[i, j] < best_c:
                best_c = cost[i, j]
                best = i
        if best < 0:
            least = 1e18
            for i in range(m):
                if allowed[i, j]:
                    o = load[i] + weight[i, j] - capacity[i]
                    if o < least:
                        least = o
                        best = i
        assign[j] = best
        load[best] += weight[best, j]
    return assign


@njit(cache=True)
def tabu_search(
    cost,
    weight,
    capacity,
    allowed,
    near,
    assign,
    pen,
    tabu,
    it0,
    iters,
    seed,
    best,
    best_cost,
    params,
):
    """``iters`` iterations from iteration ``it0`` on the walk ``assign`` (updated in place,
    as are ``pen`` and ``tabu``). ``best`` / ``best_cost[0]`` hold the best feasible answer
    (``best_cost[0]`` a huge number while there is none). ``params`` = [penalty rise,
    penalty fall, tenure min, tenure max, stall before restart, shifts per restart, least
    penalty, largest penalty, 1 to skip chains and swaps whose lower bound cannot beat the
    best move so far (the same moves are chosen either way: 0 only checks that)]. Returns
    the iteration reached (short of ``it0 + iters`` when no move is left)."""
    np.random.seed(seed)
    m, n = cost.shape
    rise, fall = params[0], params[1]
    ten_lo, ten_hi = int(params[2]), int(params[3])
    stall_max, kicks = int(params[4]), int(params[5])
    pen_lo, pen_hi = params[6], params[7]
    prune = params[8] > 0.0
    load = loads_of(weight, assign, m)
    cur, over = _cost_and_overload(cost, capacity, assign, load)
    last_gain = it0
    cheapest = np.empty(n)  # per job, its least cost at any agent (for the swap bounds)
    for j in range(n):
        cheapest[j] = cost[0, j]
        for i in range(1, m):
            if cost[i, j] < cheapest[j]:
                cheapest[j] = cost[i, j]
    for it in range(it0, it0 + iters):
        bd = 1e300
        bk = 0  # 1 shift, 2 swap
        b1 = -1
        b2 = -1
        # shifts
        for j in range(n):
            a = assign[j]
            la_new = load[a] - weight[a, j]
            da = pen[a] * (_over(la_new, capacity[a]) - _over(load[a], capacity[a]))
            ova = _over(la_new, capacity[a]) - _over(load[a], capacity[a])
            for b in range(m):
                if b == a or not allowed[b, j]:
                    continue
                lb_new = load[b] + weight[b, j]
                ovb = _over(lb_new, capacity[b]) - _over(load[b], capacity[b])
                dc = cost[b, j] - cost[a, j]
                d = dc + da + pen[b] * ovb
                if tabu[b, j] > it:
                    if not (over + ova + ovb == 0 and cur + dc < best_cost[0]):
                        continue
                d += 1e-7 * np.random.random()
                if d < bd:
                    bd = d
                    bk = 1
                    b1 = j
                    b2 = b
        # ejection chains of length 2: j leaves a for b (one of its nearest agents), and k
        # leaves b for d (one of its nearest, d != a: that would be a swap)
        b3 = -1
        b4 = -1
        slots = np.zeros(m + 1, dtype=np.int64)
        for j in range(n):
            slots[assign[j] + 1] += 1
        for i in range(m):
            slots[i + 1] += slots[i]
        fill = slots[:m].copy()
        on = np.empty(n, dtype=np.int64)
        for j in range(n):
            on[fill[assign[j]]] = j
            fill[assign[j]] += 1
        kn = near.shape[1]
        # Per agent b, a lower bound on the part of a chain through b that does not depend on
        # j: the heaviest job on b (the most room k can make) and the cheapest second leg
        # (k on b to one of its near agents d, d == a included: smaller, still a bound). A
        # (j, b) whose bound cannot beat the best move so far skips its k loop: the same
        # moves are chosen, ~2x faster on 900-1600 jobs.
        heavy = np.zeros(m, dtype=np.int64)
        leg = np.full(m, 1e300)
        back = np.full(m, 1e300)
        for k in range(n):
            b = assign[k]
            if weight[b, k] > heavy[b]:
                heavy[b] = weight[b, k]
            for t2 in range(kn):
                d = near[k, t2]
                if d < 0:
                    break
                if d == b:
                    continue
                ovd = _over(load[d] + weight[d, k], capacity[d]) - _over(load[d], capacity[d])
                h = cost[d, k] - cost[b, k] + pen[d] * ovd
                if h < leg[b]:
                    leg[b] = h
            # ... and for swaps: the cheapest way back for a job of b, to its cheapest agent.
            h = cheapest[k] - cost[b, k]
            if h < back[b]:
                back[b] = h
        for j in range(n):
            a = assign[j]
            la = load[a] - weight[a, j]
            ova = _over(la, capacity[a]) - _over(load[a], capacity[a])
            for t in range(kn):
                b = near[j, t]
                if b < 0:
                    break
                if b == a:
                    continue
                lo = (
                    cost[b, j]
                    - cost[a, j]
                    + pen[a] * ova
                    + pen[b]
                    * (
                        _over(load[b] + weight[b, j] - heavy[b], capacity[b])
                        - _over(load[b], capacity[b])
                    )
                    + leg[b]
                )
                if prune and lo - 1e-9 * (1.0 + abs(lo)) >= bd:
                    continue
                for q in range(slots[b], slots[b + 1]):
                    k = on[q]
                    lb = load[b] + weight[b, j] - weight[b, k]
                    ovb = _over(lb, capacity[b]) - _over(load[b], capacity[b])
                    for t2 in range(kn):
                        d = near[k, t2]
                        if d < 0:
                            break
                        if d == b or d == a:
                            continue
                        ld = load[d] + weight[d, k]
                        ovd = _over(ld, capacity[d]) - _over(load[d], capacity[d])
                        dc = cost[b, j] - cost[a, j] + cost[d, k] - cost[b, k]
                        dd = dc + pen[a] * ova + pen[b] * ovb + pen[d] * ovd
                        if dd >= bd:
                            continue
                        if tabu[b, j] > it or tabu[d, k] > it:
                            if not (over + ova + ovb + ovd == 0 and cur + dc < best_cost[0]):
                                continue
                        bd = dd
                        bk = 3
                        b1 = j
                        b2 = b
                        b3 = k
                        b4 = d
        # swaps: j1 to one of its nearest agents a2, and a job j2 of a2 back to a1 (the
        # same restriction as the chains: all pairs cost n^2 evaluations per iteration)
        for j1 in range(n):
            a1 = assign[j1]
            for t in range(kn):
                a2 = near[j1, t]
                if a2 < 0:
                    break
                if a2 == a1:
                    continue
                lo = (
                    cost[a2, j1]
                    - cost[a1, j1]
                    + back[a2]
                    + pen[a1]
                    * (
                        _over(load[a1] - weight[a1, j1], capacity[a1])
                        - _over(load[a1], capacity[a1])
                    )
                    + pen[a2]
                    * (
                        _over(load[a2] + weight[a2, j1] - heavy[a2], capacity[a2])
                        - _over(load[a2], capacity[a2])
                    )
                )
                if prune and lo - 1e-9 * (1.0 + abs(lo)) >= bd:
                    continue
                for q in range(slots[a2], slots[a2 + 1]):
                    j2 = on[q]
                    if not allowed[a1, j2]:
                        continue
                    l1 = load[a1] - weight[a1, j1] + weight[a1, j2]
                    l2 = load[a2] - weight[a2, j2] + weight[a2, j1]
                    ov1 = _over(l1, capacity[a1]) - _over(load[a1], capacity[a1])
                    ov2 = _over(l2, capacity[a2]) - _over(load[a2], capacity[a2])
                    dc = cost[a2, j1] + cost[a1, j2] - cost[a1, j1] - cost[a2, j2]
                    d = dc + pen[a1] * ov1 + pen[a2] * ov2
                    if d >= bd:
                        continue
                    if tabu[a2, j1] > it or tabu[a1, j2] > it:
                        if not (over + ov1 + ov2 == 0 and cur + dc < best_cost[0]):
                            continue
                    bd = d
                    bk = 2
                    b1 = j1
                    b2 = j2
        if bk == 0:
            return it  # no move at all (one agent, or every move ruled out)
        if bk == 1:
            j = b1
            a = assign[j]
            b = b2
            over -= int(_over(load[a], capacity[a]) + _over(load[b], capacity[b]))
            load[a] -= weight[a, j]
            load[b] += weight[b, j]
            over += int(_over(load[a], capacity[a]) + _over(load[b], capacity[b]))
            cur += cost[b, j] - cost[a, j]
            assign[j] = b
            tabu[a, j] = it + ten_lo + np.random.randint(0, ten_hi - ten_lo + 1)
        elif bk == 3:
            j = b1
            b = b2
            k = b3
            d = b4
            a = assign[j]
            over -= int(
                _over(load[a], capacity[a])
                + _over(load[b], capacity[b])
                + _over(load[d], capacity[d])
            )
            load[a] -= weight[a, j]
            load[b] += weight[b, j] - weight[b, k]
            load[d] += weight[d, k]
            over += int(
                _over(load[a], capacity[a])
                + _over(load[b], capacity[b])
                + _over(load[d], capacity[d])
            )
            cur += cost[b, j] - cost[a, j] + cost[d, k] - cost[b, k]
            assign[j] = b
            assign[k] = d
            tabu[a, j] = it + ten_lo + np.random.randint(0, ten_hi - ten_lo + 1)
            tabu[b, k] = it + ten_lo + np.random.randint(0, ten_hi - ten_lo + 1)
        else:
            j1 = b1
            j2 = b2
            a1 = assign[j1]
            a2 = assign[j2]
            over -= int(_over(load[a1], capacity[a1]) + _over(load[a2], capacity[a2]))
            load[a1] += weight[a1, j2] - weight[a1, j1]
            load[a2] += weight[a2, j1] - weight[a2, j2]
            over += int(_over(load[a1], capacity[a1]) + _over(load[a2], capacity[a2]))
            cur += cost[a2, j1] + cost[a1, j2] - cost[a1, j1] - cost[a2, j2]
            assign[j1] = a2
            assign[j2] = a1
            tabu[a1, j1] = it + ten_lo + np.random.randint(0, ten_hi - ten_lo + 1)
            tabu[a2, j2] = it + ten_lo + np.random.randint(0, ten_hi - ten_lo + 1)
        if over == 0:
            if cur < best_cost[0]:
                best_cost[0] = cur
                best[:] = assign
                last_gain = it
            for i in range(m):
                pen[i] = max(pen_lo, pen[i] * fall)
        else:
            for i in range(m):
                if load[i] > capacity[i]:
                    pen[i] = min(pen_hi, pen[i] * rise)
        if it - last_gain > stall_max and best_cost[0] < 9e18:
            assign[:] = best
            load = loads_of(weight, assign, m)
            for _k in range(kicks):
                j = np.random.randint(0, n)
                b = np.random.randint(0, m)
                if allowed[b, j]:
                    load[assign[j]] -= weight[assign[j], j]
                    assign[j] = b
                    load[b] += weight[b, j]
            cur, over = _cost_and_overload(cost, capacity, assign, load)
            last_gain = it
    return it0 + iters


@njit(cache=True)
def repair(cost, weight, capacity, allowed, assign):
    """Greedy repair of an assignment over capacity (``assign`` updated in place): moves out
    of an agent over capacity, a shift to an agent with room or a swap that leaves the other
    agent within capacity, the least cost per unit of overload removed first, until nothing
    is over capacity or no such move is left. Returns the overload left (0: feasible)."""
    m, n = cost.shape
    load = loads_of(weight, assign, m)
    while True:
        over = 0
        for i in range(m):
            over += _over(load[i], capacity[i])
        if over == 0:
            return 0
        best = 1e300
        bj = -1
        bb = -1
        bk = -1
        for j in range(n):
            a = assign[j]
            if load[a] <= capacity[a]:
                continue
            for b in range(m):
                if b == a or not allowed[b, j] or load[b] + weight[b, j] > capacity[b]:
                    continue
                gain = _over(load[a], capacity[a]) - _over(load[a] - weight[a, j], capacity[a])
                r = (cost[b, j] - cost[a, j]) / gain
                if r < best:
                    best = r
                    bj = j
                    bb = b
                    bk = -1
            for k in range(n):
                b = assign[k]
                if b == a or not allowed[b, j] or not allowed[a, k]:
                    continue
                lb = load[b] - weight[b, k] + weight[b, j]
                if lb > capacity[b]:
                    continue
                la = load[a] - weight[a, j] + weight[a, k]
                gain = _over(load[a], capacity[a]) - _over(la, capacity[a])
                if gain <= 0:
                    continue
                r = (cost[b, j] + cost[a, k] - cost[a, j] - cost[b, k]) / gain
                if r < best:
                    best = r
                    bj = j
                    bb = b
                    bk = k
        if bj < 0:
            return over
        a = assign[bj]
        load[a] -= weight[a, bj]
        load[bb] += weight[bb, bj]
        assign[bj] = bb
        if bk >= 0:
            load[bb] -= weight[bb, bk]
            load[a] += weight[a, bk]
            assign[bk] = a
