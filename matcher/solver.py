"""Build, hint, solve, LNS and bound for an AssignmentModel. Returns a Solution as data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from matcher.model import AssignmentModel
from schemas.market import SolveStatus


@dataclass(frozen=True)
class SolverParams:
    """Every solver knob in one place."""

    time_limit_s: float = 30.0
    workers: int = 2
    seed: int = 0
    deterministic: bool = False


@dataclass
class Solution:
    choice: np.ndarray  # int64 [n_items]: chosen candidate index, or NONE
    objective: int
    bound: int
    status: SolveStatus
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def solve(model: AssignmentModel, params: SolverParams) -> Solution:
    raise NotImplementedError  # being written
