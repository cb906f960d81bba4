"""The knapsack Lagrangian bound of the plain GAP (minimisation), in Numba.

Relaxing the assignment constraints ``sum_i x_ij = 1`` with multipliers ``u_j`` leaves one
0-1 knapsack per agent over the reduced costs ``c_ij - u_j``:

    L(u) = sum_j u_j + sum_i min { sum_j (c_ij - u_j) x_ij : sum_j w_ij x_ij <= b_i }

Every ``L(u)`` is a lower bound on the optimum cost, and its best value over ``u`` equals the
LP bound of the set-partitioning (column generation) formulation: far tighter than relaxing the
capacities. The knapsacks are solved exactly by dynamic programming over the capacity (GAP
capacities are small integers), which also gives ``f_i(c)``, the best knapsack value with
capacity ``c``, for every ``c``: then

    L(u) - f_i(b_i) + (c_ij - u_j) + f_i(b_i - w_ij)

is a lower bound on every assignment that puts job j on agent i (a relaxation: j may be
counted twice, which only lowers it). A pair whose bound reaches the cost of a known answer
can be removed from the model without losing any better answer (reduced-cost fixing).

The multipliers are improved by subgradient steps (Polyak step towards a target, the step
factor halved when the bound stalls). They start from the prices of the capacity-relaxed
Lagrangian (``PriceState``: m multipliers, the LP bound within a fraction of a second), and
the steps solve each knapsack by a core knapsack (``_knapsack_core``: items fixed by the
LP bound, a DP over the rest); the full DP, with its tables, only gives the pair bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

INF = 1e18


@njit(cache=True)
def _knapsack(
    rc: np.ndarray, w: np.ndarray, cap: int, f: np.ndarray, take: np.ndarray, keep: np.ndarray
) -> float:
    """Min of ``sum rc_j x_j`` with ``sum w_j x_j <= cap``; ``f[c]`` gets the optimum for every
    capacity ``c <= cap`` and ``take`` (bool [n]) the items of the optimum at ``cap``. ``keep``
    (bool [n, >= cap + 1]) is scratch space, reused: allocating it per call was a third of
    a step on 1600 jobs."""
    n = rc.shape[0]
    for c in range(cap + 1):
        f[c] = 0.0
    for j in range(n):
        take[j] = False
    count = 0
    for j in range(n):
        if rc[j] < 0.0 and w[j] <= cap:
            count += 1
    if count == 0:
        return 0.0
    items = np.empty(count, dtype=np.int64)
    k = 0
    for j in range(n):
        if rc[j] < 0.0 and w[j] <= cap:
            items[k] = j
            k += 1
    _dp(items, count, rc, w, cap, f, take, keep)
    return f[cap]


@njit(cache=True)
def _dp(
    items: np.ndarray,
    count: int,
    rc: np.ndarray,
    w: np.ndarray,
    cap: int,
    f: np.ndarray,
    take: np.ndarray,
    keep: np.ndarray,
) -> None:
    """The 0-1 knapsack DP over ``items[:count]`` into ``f[: cap + 1]`` (zeroed by the
    caller), its optimum at ``cap`` marked in ``take``; ``keep`` is the scratch table."""
    for k in range(count):
        j = items[k]
        wj = w[j]
        r = rc[j]
        keep[k, : min(wj, cap + 1)] = False
        for c in range(cap, wj - 1, -1):
            v = f[c - wj] + r
            if v < f[c]:
                f[c] = v
                keep[k, c] = True
            else:
                keep[k, c] = False
    c = cap
    for k in range(count - 1, -1, -1):
        if keep[k, c]:
            take[items[k]] = True
            c -= w[items[k]]


@njit(cache=True)
def _knapsack_core(
    rc: np.ndarray, w: np.ndarray, cap: int, f: np.ndarray, take: np.ndarray, keep: np.ndarray
) -> float:
    """The optimum of ``_knapsack`` at ``cap`` (value and an optimal ``take``) without the
    tables for smaller capacities, fast: near the Lagrangian optimum ~1450 of d801600's 1600
    jobs have a negative reduced cost at every agent, and a DP over all of them cost 40-200 ms a
    step. Items sorted by ratio ``rc / w``; the greedy fill gives the LP optimum (Dantzig) and
    an answer ``z``; an item of the LP fill whose removal, or an item after it whose taking,
    makes the LP bound exceed ``z`` is fixed (every optimum agrees with it: the bound is that
    of the convex LP value curve at slope ``rho``, the break item's ratio), and the DP runs
    over the few items left (the core) and the capacity the fixed ones leave."""
    n = rc.shape[0]
    total = 0.0
    count = 0
    for j in range(n):
        take[j] = False
        if rc[j] < 0.0 and w[j] <= cap:
            if w[j] == 0:
                take[j] = True
                total += rc[j]
            else:
                count += 1
    if count == 0:
        return total
    items = np.empty(count, dtype=np.int64)
    ratio = np.empty(count)
    k = 0
    for j in range(n):
        if rc[j] < 0.0 and 0 < w[j] <= cap:
            items[k] = j
            ratio[k] = rc[j] / w[j]
            k += 1
    items = items[np.argsort(ratio)]  # most negative ratio first
    room = cap
    s = count
    prefix = 0.0
    for k in range(count):
        j = items[k]
        if w[j] > room:
            s = k
            break
        room -= w[j]
        prefix += rc[j]
    if s == count:  # everything with a negative reduced cost fits
        for k in range(count):
            take[items[k]] = True
        return total + prefix
    rho = rc[items[s]] / w[items[s]]
    z_lp = prefix + room * rho
    z = prefix  # the greedy answer: the LP fill, then whatever still fits
    left = room
    for k in range(s + 1, count):
        j = items[k]
        if w[j] <= left:
            left -= w[j]
            z += rc[j]
    tol = 1e-9 * (1.0 + abs(z))
    core = np.empty(count, dtype=np.int64)
    ncore = 0
    resid = cap
    for k in range(count):
        j = items[k]
        if k < s and z_lp - rc[j] + w[j] * rho > z + tol:
            take[j] = True  # fixed in
            total += rc[j]
            resid -= w[j]
        elif k > s and z_lp + rc[j] - w[j] * rho > z + tol:
            continue  # fixed out
        else:
            core[ncore] = j
            ncore += 1
    if ncore == 0:
        return total
    for c in range(resid + 1):
        f[c] = 0.0
    _dp(core, ncore, rc, w, resid, f, take, keep)
    return total + f[resid]


@njit(cache=True)
def lagrangian_step_value(cost, weight, capacity, u, x):
    """``L(u)`` and the knapsack choices ``x``, by the core knapsack (no value tables)."""
    m, n = cost.shape
    total = 0.0
    for j in range(n):
        total += u[j]
    rc = np.empty(n)
    f = np.empty(capacity.max() + 1)
    keep = np.empty((n, capacity.max() + 1), dtype=np.bool_)
    for i in range(m):
        for j in range(n):
            rc[j] = cost[i, j] - u[j]
        total += _knapsack_core(rc, weight[i], capacity[i], f, x[i], keep)
    return total


@njit(cache=True)
def lagrangian_value(cost, weight, capacity, u, x, fs):
    """``L(u)``; ``x`` (bool [m, n]) gets the knapsack choices, ``fs`` [m, max cap + 1] the
    value-by-capacity tables."""
    m, n = cost.shape
    total = 0.0
    for j in range(n):
        total += u[j]
    rc = np.empty(n)
    keep = np.empty((n, fs.shape[1]), dtype=np.bool_)
    for i in range(m):
        for j in range(n):
            rc[j] = cost[i, j] - u[j]
        total += _knapsack(rc, weight[i], capacity[i], fs[i], x[i], keep)
    return total


@njit(cache=True)
def subgradient(cost, weight, capacity, u, best_u, state, target, steps, x, fs):
    """``steps`` subgradient steps from ``u`` (updated in place). ``state`` = [best bound,
    step factor, steps since the best improved]; ``best_u`` holds the multipliers of the best
    bound. ``target`` is an upper estimate of the optimum (a known answer's cost)."""
    m, n = cost.shape
    g = np.empty(n)
    for _ in range(steps):
        value = lagrangian_step_value(cost, weight, capacity, u, x)
        if value > state[0] + 1e-9:
            state[0] = value
            best_u[:] = u
            state[2] = 0.0
        else:
            state[2] += 1.0
            if state[2] >= 20.0:
                state[1] *= 0.5
                state[2] = 0.0
        norm = 0.0
        for j in range(n):
            s = 1.0
            for i in range(m):
                if x[i, j]:
                    s -= 1.0
            g[j] = s
            norm += s * s
        if norm == 0.0:  # the knapsacks assign every job once: optimal
            state[1] = 0.0
            return
        step = state[1] * max(target - value, 1e-3 * (abs(target) + 1.0)) / norm
        for j in range(n):
            u[j] += step * g[j]


@njit(cache=True)
def capacity_steps(cost, weight, capacity, lam, best_lam, state, target, steps):
    """``steps`` subgradient steps on the other Lagrangian, the capacities relaxed with one
    price ``lam_i >= 0`` per agent: ``sum_j min_i (c_ij + lam_i w_ij) - sum_i lam_i b_i``.
    Its best value is the LP bound of the GAP, a little weaker than the knapsack
    Lagrangian's, but it has m multipliers instead of n and a step costs m x n: on d801600
    (80 x 1600) ~600 steps, 0.2 s, reach the LP bound, where 100 knapsack steps from the
    second-cheapest costs were still 0.7 % below it. ``u_j = min_i (c_ij + lam_i w_ij)``
    then starts the knapsack Lagrangian at least at the LP bound (``start_multipliers``).
    ``state`` and ``target`` as in ``subgradient``."""
    m, n = cost.shape
    g = np.empty(m)
    for _ in range(steps):
        value = 0.0
        for i in range(m):
            g[i] = -float(capacity[i])
            value -= lam[i] * capacity[i]
        for j in range(n):
            best_i = 0
            best_v = INF
            for i in range(m):
                v = cost[i, j] + lam[i] * weight[i, j]
                if v < best_v:
                    best_v = v
                    best_i = i
            value += best_v
            g[best_i] += weight[best_i, j]
        if value > state[0] + 1e-9:
            state[0] = value
            best_lam[:] = lam
            state[2] = 0.0
        else:
            state[2] += 1.0
            if state[2] >= 20.0:
                state[1] *= 0.5
                state[2] = 0.0
        norm = 0.0
        for i in range(m):
            if lam[i] <= 0.0 and g[i] < 0.0:
                g[i] = 0.0  # the price is at its floor and cannot go lower
            norm += g[i] * g[i]
        if norm == 0.0:  # the cheapest agents fit every capacity: optimal
            state[1] = 0.0
            return
        step = state[1] * max(target - value, 1e-3 * (abs(target) + 1.0)) / norm
        for i in range(m):
            lam[i] = max(0.0, lam[i] + step * g[i])


def start_multipliers(cost: np.ndarray, weight: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Job multipliers from agent prices: ``u_j = min_i (c_ij + lam_i w_ij)``. With them every
    reduced cost plus its agent's price is nonnegative, so ``L(u)`` is at least the
    capacity-relaxed Lagrangian at ``lam`` (weak duality of each knapsack's LP)."""
    return (cost + lam[:, None] * weight).min(axis=0)


@njit(cache=True)
def pair_bounds(cost, weight, capacity, u, value, fs):
    """Lower bound of every assignment using pair (i, j) (INF where ``w_ij > b_i``)."""
    m, n = cost.shape
    out = np.empty((m, n))
    for i in range(m):
        b = capacity[i]
        base = value - fs[i, b]
        for j in range(n):
            if weight[i, j] > b:
                out[i, j] = INF
            else:
                out[i, j] = base + (cost[i, j] - u[j]) + fs[i, b - weight[i, j]]
    return out


@dataclass
class PriceState:
    """Agent prices of the capacity-relaxed Lagrangian (``capacity_steps``) and its best
    value so far (min form): the knapsack Lagrangian's start."""

    cost: np.ndarray  # float64 [m, n]
    weight: np.ndarray  # int64 [m, n]
    capacity: np.ndarray  # int64 [m]
    lam: np.ndarray
    best_lam: np.ndarray
    state: np.ndarray  # [best bound, step factor, stall count]

    @classmethod
    def start(cls, cost: np.ndarray, weight: np.ndarray, capacity: np.ndarray) -> PriceState:
        m = cost.shape[0]
        return cls(
            np.ascontiguousarray(cost, dtype=np.float64),
            np.ascontiguousarray(weight, dtype=np.int64),
            np.ascontiguousarray(capacity, dtype=np.int64),
            np.zeros(m),
            np.zeros(m),
            np.array([-INF, 1.0, 0.0]),
        )

    @property
    def bound(self) -> float:
        return float(self.state[0])

    @property
    def converged(self) -> bool:
        return self.state[1] < 1e-5

    def run(self, steps: int, target: float) -> None:
        capacity_steps(
            self.cost,
            self.weight,
            self.capacity,
            self.lam,
            self.best_lam,
            self.state,
            float(target),
            steps,
        )

    def multipliers(self) -> np.ndarray:
        """The job multipliers these prices give (``start_multipliers``) at the best prices."""
        return start_multipliers(self.cost, self.weight, self.best_lam)


@dataclass
class LagrangeState:
    """Multipliers and the best bound found so far for one instance (min form)."""

    cost: np.ndarray  # float64 [m, n]
    weight: np.ndarray  # int64 [m, n]
    capacity: np.ndarray  # int64 [m]
    u: np.ndarray
    best_u: np.ndarray
    state: np.ndarray  # [best bound, step factor, stall count]
    x: np.ndarray
    fs: np.ndarray

    @classmethod
    def start(
        cls, cost: np.ndarray, weight: np.ndarray, capacity: np.ndarray, step_factor: float
    ) -> LagrangeState:
        cost = np.ascontiguousarray(cost, dtype=np.float64)
        weight = np.ascontiguousarray(weight, dtype=np.int64)
        capacity = np.ascontiguousarray(capacity, dtype=np.int64)
        m, n = cost.shape
        # Start from each job's second-cheapest agent (its cheapest when m == 1): most jobs
        # then want exactly their cheapest agent.
        part = np.sort(cost, axis=0)
        u = part[min(1, m - 1)].copy()
        return cls(
            cost,
            weight,
            capacity,
            u,
            u.copy(),
            np.array([-INF, step_factor, 0.0]),
            np.zeros((m, n), dtype=np.bool_),
            np.zeros((m, int(capacity.max()) + 1)),
        )

    @property
    def bound(self) -> float:
        return float(self.state[0])

    @property
    def converged(self) -> bool:
        return self.state[1] < 1e-4

    def restart(self, u: np.ndarray, step_factor: float) -> None:
        """Go on from multipliers ``u`` (e.g. ``PriceState.multipliers``) with a new step
        factor; the best bound so far is kept."""
        self.u[:] = u
        self.state[1] = step_factor
        self.state[2] = 0.0

    def run(self, steps: int, target: float) -> None:
        subgradient(
            self.cost,
            self.weight,
            self.capacity,
            self.u,
            self.best_u,
            self.state,
            float(target),
            steps,
            self.x,
            self.fs,
        )

    def pair_bounds(self) -> np.ndarray:
        """Per pair lower bounds at the best multipliers (see the module docstring)."""
        x = np.zeros_like(self.x)
        fs = np.zeros_like(self.fs)
        value = lagrangian_value(self.cost, self.weight, self.capacity, self.best_u, x, fs)
        return pair_bounds(self.cost, self.weight, self.capacity, self.best_u, value, fs)
