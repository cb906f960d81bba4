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
factor halved when the bound stalls).
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
            j = items[k]
            take[j] = True
            c -= w[j]
    return f[cap]


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
        value = lagrangian_value(cost, weight, capacity, u, x, fs)
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
