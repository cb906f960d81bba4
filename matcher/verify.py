"""Independent check of any assignment: solver output is verified, never trusted."""

from __future__ import annotations

import numpy as np

from matcher.model import NONE, AssignmentModel, usage_of


class InvalidAssignment(ValueError):
    """An assignment that breaks a hard constraint of its model."""


def verify_assignment(model: AssignmentModel, choice: np.ndarray) -> int:
    """Check ``choice`` (candidate index per item, or NONE) and return its recomputed objective.

    Plain NumPy, written apart from the kernels and the CP-SAT builder on purpose.
    """
    choice = np.asarray(choice, dtype=np.int64)
    if choice.shape != (model.n_items,):
        raise InvalidAssignment(f"expected {model.n_items} choices, got {choice.shape}")
    placed = choice != NONE
    items = np.flatnonzero(placed)
    chosen = choice[placed]
    if chosen.size and (
        np.any(chosen < model.cand_ptr[items]) or np.any(chosen >= model.cand_ptr[items + 1])
    ):
        bad = items[(chosen < model.cand_ptr[items]) | (chosen >= model.cand_ptr[items + 1])]
        raise InvalidAssignment(f"item {int(bad[0])} chose a candidate that is not its own")
    missing = np.flatnonzero(model.must_assign & ~placed)
    if missing.size:
        raise InvalidAssignment(f"item {int(missing[0])} must be assigned")
    pinned = np.flatnonzero(model.fixed != NONE)
    wrong_pin = pinned[choice[pinned] != model.fixed[pinned]]
    if wrong_pin.size:
        raise InvalidAssignment(f"item {int(wrong_pin[0])} is pinned elsewhere")
    linked = np.flatnonzero(model.partner != NONE)
    if linked.size:
        other = model.partner[linked]
        if np.any(placed[linked] != placed[other]):
            raise InvalidAssignment("a second-source pair is only half placed")
        both = linked[placed[linked]]
        groups = model.bin_group[model.cand_bin[choice[both]]]
        partner_groups = model.bin_group[model.cand_bin[choice[model.partner[both]]]]
        if np.any(groups == partner_groups):
            raise InvalidAssignment("a second source is in the same group as its primary")
    usage = usage_of(model, choice)
    over = np.flatnonzero(usage > model.capacity)
    if over.size:
        r = int(over[0])
        raise InvalidAssignment(
            f"resource {r} used {int(usage[r])} over capacity {int(model.capacity[r])}"
        )
    return int(model.cand_value[chosen].sum())
