"""The plain Generalised Assignment Problem: OR-Library / Yagiura files, and their model.

Files are a stream of whitespace-separated integers (line breaks carry no meaning): an
OR-Library file starts with the number of problems P, then P blocks of
``m n, cost (m x n, agent-major), weight (m x n), capacity (m)``; a Yagiura file is one block
without P. Every job is assigned to exactly one agent; the objective is the total cost,
minimised or maximised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from matcher.model import NONE, AssignmentModel

Sense = Literal["min", "max"]


class GapFormatError(ValueError):
    """A GAP file that does not hold the integers its header announces."""


@dataclass(frozen=True)
class GapInstance:
    name: str
    cost: np.ndarray  # int64 [m, n]
    weight: np.ndarray  # int64 [m, n]
    capacity: np.ndarray  # int64 [m]

    @property
    def agents(self) -> int:
        return self.cost.shape[0]

    @property
    def jobs(self) -> int:
        return self.cost.shape[1]


def _block(tokens: np.ndarray, pos: int, name: str) -> tuple[GapInstance, int]:
    if pos + 2 > len(tokens):
        raise GapFormatError(f"{name}: file ends before the problem header")
    m, n = int(tokens[pos]), int(tokens[pos + 1])
    if m <= 0 or n <= 0:
        raise GapFormatError(f"{name}: header says {m} agents and {n} jobs")
    need = 2 * m * n + m
    body = tokens[pos + 2 : pos + 2 + need]
    if len(body) < need:
        raise GapFormatError(f"{name}: expected {need} numbers after the header, found {len(body)}")
    cost = body[: m * n].reshape(m, n)
    weight = body[m * n : 2 * m * n].reshape(m, n)
    capacity = body[2 * m * n :]
    if np.any(weight < 0) or np.any(capacity < 0):
        raise GapFormatError(f"{name}: negative weight or capacity")
    return GapInstance(name, cost.copy(), weight.copy(), capacity.copy()), pos + 2 + need


def read_gap_file(path: str | Path) -> list[GapInstance]:
    """All problems of a GAP file, in file order (1-based problem k is element k-1)."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise GapFormatError(f"{path.name}: not a text file") from exc
    try:
        tokens = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError) as exc:
        raise GapFormatError(f"{path.name}: contains something that is not an integer") from exc
    if len(tokens) < 3:
        raise GapFormatError(f"{path.name}: too short to be a GAP file")
    # One block without a leading P fits exactly 2 + 2mn + m tokens; otherwise it is P blocks.
    m, n = int(tokens[0]), int(tokens[1])
    if m > 0 and n > 0 and len(tokens) == 2 + 2 * m * n + m:
        return [_block(tokens, 0, path.name)[0]]
    count = int(tokens[0])
    problems, pos = [], 1
    for k in range(count):
        problem, pos = _block(tokens, pos, f"{path.name} problem {k + 1}")
        problems.append(problem)
    if pos != len(tokens):
        left = len(tokens) - pos
        raise GapFormatError(f"{path.name}: {left} numbers left after {count} problems")
    return problems


def to_model(instance: GapInstance, sense: Sense) -> AssignmentModel:
    """Every job an item with every agent as a candidate; the value is -cost for min."""
    m, n = instance.agents, instance.jobs
    # Item j's candidates are agents 0..m-1 in order: candidate index j*m + i.
    values = instance.cost.T.reshape(-1).astype(np.int64)
    if sense == "min":
        values = -values
    return AssignmentModel(
        capacity=instance.capacity.astype(np.int64),
        cand_ptr=np.arange(0, n * m + 1, m, dtype=np.int64),
        cand_bin=np.tile(np.arange(m, dtype=np.int32), n),
        cand_value=values,
        use_ptr=np.arange(n * m + 1, dtype=np.int64),
        use_res=np.tile(np.arange(m, dtype=np.int32), n),
        use_amt=instance.weight.T.reshape(-1).astype(np.int64),
        must_assign=np.ones(n, dtype=bool),
        partner=np.full(n, NONE, dtype=np.int32),
        bin_group=np.arange(m, dtype=np.int32),
        fixed=np.full(n, NONE, dtype=np.int64),
        hint=np.full(n, NONE, dtype=np.int64),
    )


def agents_of(instance: GapInstance, choice: np.ndarray) -> np.ndarray:
    """Agent (0-based) of each job from a model choice."""
    return (np.asarray(choice) - np.arange(instance.jobs) * instance.agents).astype(np.int64)


def gap_objective(instance: GapInstance, agents: np.ndarray) -> int:
    """Total cost of an agent-per-job assignment, after checking it respects every capacity."""
    agents = np.asarray(agents, dtype=np.int64)
    jobs = np.arange(instance.jobs)
    if agents.shape != (instance.jobs,) or np.any(agents < 0) or np.any(agents >= instance.agents):
        raise ValueError("every job needs exactly one agent in range")
    load = np.bincount(agents, weights=instance.weight[agents, jobs], minlength=instance.agents)
    if np.any(load > instance.capacity):
        raise ValueError("an agent is over capacity")
    return int(instance.cost[agents, jobs].sum())
