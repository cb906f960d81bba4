"""Exact re-solves of a few jobs of a plain-GAP answer with CP-SAT, the other jobs fixed.

Used to recombine two answers: the jobs where they differ are freed (to any allowed agent
with room once the common jobs are placed) and the rest stays. Both answers are placements of
the freed jobs, so the re-solve is never worse than either; on type C the tabu walks and the
dives end in different local optima 15-25 jobs apart, which a walk does not cross but CP-SAT
solves exactly in tens of milliseconds.
"""

from __future__ import annotations

import numpy as np
from ortools.sat.python import cp_model

from matcher.cpsat import make_solver


def resolve_jobs(
    cost: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    allowed: np.ndarray,
    assign: np.ndarray,
    free: np.ndarray,
    time_limit_s: float,
    seed: int,
) -> np.ndarray | None:
    """The cheapest placement of the ``free`` jobs (min form ``cost``) while every other job
    stays on its agent in ``assign`` (a feasible answer, used as the hint): each free job
    goes to an allowed agent, or back to its own. Returns the new agent per job, or None
    when CP-SAT found nothing in ``time_limit_s`` (the caller verifies and compares)."""
    m, n = cost.shape
    free = np.asarray(free, dtype=np.int64)
    fixed = np.ones(n, dtype=bool)
    fixed[free] = False
    load = np.bincount(
        assign[fixed], weights=weight[assign[fixed], np.flatnonzero(fixed)], minlength=m
    ).astype(np.int64)
    room = capacity - load
    options = allowed[:, free] & (weight[:, free] <= room[:, None])
    options[assign[free], np.arange(len(free))] = True
    cp = cp_model.CpModel()
    agent_terms: list[list[tuple[cp_model.IntVar, int]]] = [[] for _ in range(m)]
    objective = []
    choices: list[tuple[int, list[tuple[int, cp_model.IntVar]]]] = []  # per free job
    for k, j in enumerate(free.tolist()):
        row = []
        for i in np.flatnonzero(options[:, k]).tolist():
            x = cp.new_bool_var(f"x_{i}_{j}")
            cp.add_hint(x, i == assign[j])
            row.append((i, x))
            agent_terms[i].append((x, int(weight[i, j])))
            objective.append((x, int(cost[i, j])))
        cp.add_exactly_one(x for _, x in row)
        choices.append((j, row))
    for i, terms in enumerate(agent_terms):
        if terms and sum(w for _, w in terms) > room[i]:
            cp.add(sum(w * x for x, w in terms) <= int(room[i]))
    cp.minimize(sum(c * x for x, c in objective))
    solver = make_solver(time_limit_s=time_limit_s, workers=1, seed=seed)
    status = solver.solve(cp)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    out = assign.copy()
    for j, row in choices:
        out[j] = next(i for i, x in row if solver.boolean_value(x))
    return out
