"""The CP-SAT formulation of an AssignmentModel, built from its arrays.

One Boolean per candidate, created first so that variable index == candidate index and a
solution is read back as one array slice. Constraints, one helper per rule:

* ``_add_one_per_item``     each item takes at most one candidate (exactly one if it must);
* ``_add_capacity``         per resource, sum of uses <= capacity (only where it can bind);
* ``_add_second_sources``   a linked pair is placed together, never in the same group;
* ``_add_pins``             pinned items keep their candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from matcher.control import RunControl
from matcher.model import NONE, AssignmentModel


@dataclass
class CpsatRun:
    """The outcome of one CP-SAT solve, as data."""

    choice: np.ndarray | None  # best solution found (candidate per item), None if none
    objective: int | None
    bound: int | None  # None: nothing proved
    optimal: bool
    infeasible: bool
    wall_s: float


def _item_slices(model: AssignmentModel) -> list[tuple[int, int]]:
    ptr = model.cand_ptr.tolist()
    return list(zip(ptr[:-1], ptr[1:], strict=True))


def _add_one_per_item(cp: cp_model.CpModel, x: list, model: AssignmentModel) -> None:
    must = model.must_assign.tolist()
    for i, (lo, hi) in enumerate(_item_slices(model)):
        if must[i]:
            cp.add_exactly_one(x[lo:hi])
        elif hi - lo > 1:
            cp.add_at_most_one(x[lo:hi])


def _add_capacity(cp: cp_model.CpModel, x: list, model: AssignmentModel) -> None:
    cand_of_use = np.repeat(np.arange(model.n_cand), np.diff(model.use_ptr))
    demand = np.bincount(model.use_res, weights=model.use_amt, minlength=model.n_res)
    # A resource that every candidate together cannot overfill needs no constraint. Counting
    # every candidate (not one per item) over-estimates demand, so this never drops a binding
    # constraint.
    binding = demand > model.capacity
    keep = binding[model.use_res]
    res = model.use_res[keep]
    order = np.argsort(res, kind="stable")
    res = res[order]
    cands = cand_of_use[keep][order].tolist()
    amts = model.use_amt[keep][order].tolist()
    bounds = np.flatnonzero(np.diff(res)) + 1
    starts = np.concatenate(([0], bounds)).tolist() if len(res) else []
    ends = np.concatenate((bounds, [len(res)])).tolist() if len(res) else []
    caps = model.capacity[res[starts]].tolist() if len(res) else []
    for lo, hi, cap in zip(starts, ends, caps, strict=True):
        cp.add(cp_model.LinearExpr.weighted_sum([x[c] for c in cands[lo:hi]], amts[lo:hi]) <= cap)


def _add_second_sources(cp: cp_model.CpModel, x: list, model: AssignmentModel) -> None:
    slices = _item_slices(model)
    groups = model.bin_group[model.cand_bin].tolist()
    for i in np.flatnonzero(model.partner > np.arange(model.n_items)).tolist():
        p = int(model.partner[i])
        (ilo, ihi), (plo, phi) = slices[i], slices[p]
        cp.add(sum(x[ilo:ihi]) == sum(x[plo:phi]))
        by_group: dict[int, list] = {}
        for c in range(ilo, ihi):
            by_group.setdefault(groups[c], []).append(x[c])
        for c in range(plo, phi):
            if groups[c] in by_group:
                by_group[groups[c]].append(x[c])
        for members in by_group.values():
            if len(members) > 1:
                cp.add_at_most_one(members)


def _add_pins(cp: cp_model.CpModel, x: list, model: AssignmentModel) -> None:
    for c in model.fixed[model.fixed != NONE].tolist():
        cp.add(x[c] == 1)


def build(
    model: AssignmentModel, *, hint: np.ndarray | None = None, objective_floor: int | None = None
) -> tuple[cp_model.CpModel, list]:
    """The CP-SAT model of ``model``; ``objective_floor`` asks for a solution at least that good."""
    cp = cp_model.CpModel()
    x = [cp.new_bool_var(f"x{c}") for c in range(model.n_cand)]
    _add_one_per_item(cp, x, model)
    _add_capacity(cp, x, model)
    _add_second_sources(cp, x, model)
    _add_pins(cp, x, model)
    objective = cp_model.LinearExpr.weighted_sum(x, model.cand_value.tolist())
    cp.maximize(objective)
    if objective_floor is not None:
        cp.add(objective >= objective_floor)
    if hint is not None:
        chosen = np.zeros(model.n_cand, dtype=bool)
        chosen[hint[hint != NONE]] = True
        for var, v in zip(x, chosen.tolist(), strict=True):
            cp.add_hint(var, v)
    return cp, x


def make_solver(
    *, time_limit_s: float | None, workers: int, seed: int, deterministic_time: float | None = None
) -> cp_model.CpSolver:
    """All CP-SAT parameters are set here, explicitly."""
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.num_workers = workers
    params.random_seed = seed
    if time_limit_s is not None:
        params.max_time_in_seconds = max(0.01, time_limit_s)
    if deterministic_time is not None:
        params.max_deterministic_time = max(0.01, deterministic_time)
    params.log_search_progress = False
    return solver


class _Progress(cp_model.CpSolverSolutionCallback):
    """Reports each improving solution, and stops the search once the run must stop (a
    cancel that came before the search could register its stop hook)."""

    def __init__(self, control: RunControl, phase: str, offset: int) -> None:
        super().__init__()
        self.control = control
        self.phase = phase
        self.offset = offset

    def on_solution_callback(self) -> None:
        if self.control.stop_requested() and not self.control.deterministic:
            self.stop_search()
            return
        if self.control.cancelled:
            self.stop_search()
            return
        self.control.report(self.phase, objective=self.offset + self.objective_value)


def run(
    model: AssignmentModel,
    solver: cp_model.CpSolver,
    *,
    hint: np.ndarray | None = None,
    objective_floor: int | None = None,
    control: RunControl | None = None,
    phase: str = "cpsat",
    report_offset: int | None = None,
) -> CpsatRun:
    """Build and solve ``model``; read the best solution back as a candidate per item.

    With ``control``, a cancel stops the search (``CpSolver.stop_search``) and, when
    ``report_offset`` is given, each improving solution is reported as progress (its
    objective plus the offset: the value of everything outside this model).
    """
    cp, _ = build(model, hint=hint, objective_floor=objective_floor)
    if control is not None and not control.deterministic:
        # Building took time (seconds on a large model): the search gets what is left of the
        # run now, not what was left when the solver was configured.
        limit = solver.parameters.max_time_in_seconds
        solver.parameters.max_time_in_seconds = max(0.01, min(limit, control.left()))
    if control is None:
        status = solver.solve(cp)
    elif control.cancelled:
        return CpsatRun(None, None, None, False, False, 0.0)
    else:
        callback = None if report_offset is None else _Progress(control, phase, report_offset)
        with control.on_cancel(solver.stop_search):
            status = solver.solve(cp, callback)
    found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    choice = None
    objective = None
    if found:
        values = np.fromiter(solver.response_proto.solution, dtype=np.int64)[: model.n_cand] > 0
        choice = np.full(model.n_items, NONE, dtype=np.int64)
        chosen = np.flatnonzero(values)
        choice[model.cand_item()[chosen]] = chosen
        objective = int(round(solver.objective_value))
    bound_value = solver.best_objective_bound
    bound: int | None
    if status == cp_model.OPTIMAL:
        bound = objective
    elif status == cp_model.FEASIBLE and np.isfinite(bound_value):
        bound = int(np.floor(bound_value + 1e-6))
    else:
        bound = None  # stopped before it proved anything (UNKNOWN reports a bound of 0)
    return CpsatRun(
        choice=choice,
        objective=objective,
        bound=bound,
        optimal=status == cp_model.OPTIMAL,
        infeasible=status == cp_model.INFEASIBLE,
        wall_s=solver.wall_time,
    )
