"""The generic assignment model every solve goes through.

A multi-resource generalised assignment problem with side constraints, in flat arrays:

* items (projects, or GAP jobs) choose at most one candidate (exactly one when
  ``must_assign``); a candidate is an (item, bin) pair with an integer value to maximise;
* each candidate uses integer amounts of some resources (site x process x month, or a GAP
  agent), each resource at most once per candidate, and every resource has an integer
  capacity;
* two items may be linked as a second-source pair (``partner``): both are placed or neither,
  and never in bins of the same ``bin_group`` (CDMO);
* an item may be pinned to one of its candidates (``fixed``) and may carry a hint.

Candidates of item i are ``cand_ptr[i]:cand_ptr[i+1]``; resource uses of candidate c are
``use_ptr[c]:use_ptr[c+1]``. All arrays are contiguous numpy arrays so Numba kernels and the
CP-SAT builder read the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NONE = -1


@dataclass(frozen=True)
class AssignmentModel:
    capacity: np.ndarray  # int64 [n_res]
    cand_ptr: np.ndarray  # int64 [n_items + 1]
    cand_bin: np.ndarray  # int32 [n_cand]
    cand_value: np.ndarray  # int64 [n_cand], maximised
    use_ptr: np.ndarray  # int64 [n_cand + 1]
    use_res: np.ndarray  # int32 [n_use]
    use_amt: np.ndarray  # int64 [n_use]
    must_assign: np.ndarray  # bool [n_items]
    partner: np.ndarray  # int32 [n_items], NONE or the linked item
    bin_group: np.ndarray  # int32 [n_bins]
    fixed: np.ndarray  # int64 [n_items], NONE or a candidate index
    hint: np.ndarray  # int64 [n_items], NONE or a candidate index
    # Upper bound on the value any non-candidate placement of item i could add (the best
    # eligible pair that was cut from the candidate list), or a very negative number when
    # the candidate list is complete. Keeps the reported bound honest after truncation.
    outside_best: np.ndarray = field(default=None)  # type: ignore[arg-type]  # int64 [n_items]
    # Resources from this index on are pair rules (matcher.pairs: region separation, blended
    # budget): used only by candidates of linked pairs. The Lagrangian bound never prices them
    # (their units, e.g. cents, would swamp the subgradient) but enforces them exactly in its
    # per-pair subproblem. None: every resource is an ordinary capacity.
    side_from: int = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.outside_best is None:
            object.__setattr__(
                self, "outside_best", np.full(self.n_items, np.iinfo(np.int64).min // 4)
            )
        if self.side_from is None:
            object.__setattr__(self, "side_from", self.n_res)

    @property
    def n_items(self) -> int:
        return len(self.cand_ptr) - 1

    @property
    def n_cand(self) -> int:
        return len(self.cand_bin)

    @property
    def n_res(self) -> int:
        return len(self.capacity)

    @property
    def n_bins(self) -> int:
        return len(self.bin_group)

    def cand_item(self) -> np.ndarray:
        """Item of every candidate (int64 [n_cand])."""
        return np.repeat(np.arange(self.n_items, dtype=np.int64), np.diff(self.cand_ptr))


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, e) for s, e in zip(starts, ends)])`` without a Python loop."""
    lengths = (np.asarray(ends) - np.asarray(starts)).astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths)
    return np.repeat(offsets, lengths) + np.arange(total, dtype=np.int64)


def restrict(
    model: AssignmentModel,
    items: np.ndarray,
    capacity: np.ndarray,
    cand_mask: np.ndarray | None = None,
) -> tuple[AssignmentModel, np.ndarray]:
    """The sub-model over ``items`` (sorted, closed under ``partner``) with ``capacity``
    (usually what the other items leave free), keeping only candidates in ``cand_mask`` if
    given (pinned candidates are always kept). Returns it and, for each of its candidates,
    the candidate index in ``model``. Resource and bin indices stay global."""
    items = np.asarray(items, dtype=np.int64)
    lo, hi = model.cand_ptr[items], model.cand_ptr[items + 1]
    cand_index = concat_ranges(lo, hi)
    counts = hi - lo
    if cand_mask is not None:
        keep = cand_mask[cand_index].copy()
        pinned = model.fixed[items]
        keep[np.isin(cand_index, pinned[pinned != NONE])] = True
        owner = np.repeat(np.arange(len(items)), counts)
        cand_index = cand_index[keep]
        counts = np.bincount(owner[keep], minlength=len(items))
    sub_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    use_index = concat_ranges(model.use_ptr[cand_index], model.use_ptr[cand_index + 1])
    use_lengths = model.use_ptr[cand_index + 1] - model.use_ptr[cand_index]
    local = np.full(model.n_items, NONE, dtype=np.int64)
    local[items] = np.arange(len(items))
    partner = model.partner[items]
    sub_partner = np.where(partner != NONE, local[np.maximum(partner, 0)], NONE)
    if np.any((partner != NONE) & (sub_partner == NONE)):
        raise ValueError("item set is not closed under partner")

    def relabel(global_cand: np.ndarray) -> np.ndarray:
        """Global candidate index -> local one (NONE where it was dropped or absent)."""
        pos = np.searchsorted(cand_index, global_cand)
        pos = np.minimum(pos, max(0, len(cand_index) - 1))
        found = (global_cand != NONE) & (len(cand_index) > 0)
        found &= cand_index[pos] == global_cand if len(cand_index) else found
        return np.where(found, pos, NONE)

    sub = AssignmentModel(
        capacity=capacity,
        cand_ptr=sub_ptr,
        cand_bin=model.cand_bin[cand_index],
        cand_value=model.cand_value[cand_index],
        use_ptr=np.concatenate(([0], np.cumsum(use_lengths))).astype(np.int64),
        use_res=model.use_res[use_index],
        use_amt=model.use_amt[use_index],
        must_assign=model.must_assign[items],
        partner=sub_partner.astype(np.int32),
        bin_group=model.bin_group,
        fixed=relabel(model.fixed[items]),
        hint=relabel(model.hint[items]),
        outside_best=model.outside_best[items],
        side_from=model.side_from,
    )
    return sub, cand_index


def usage_of(model: AssignmentModel, choice: np.ndarray) -> np.ndarray:
    """Amount of every resource used by ``choice`` (int64 [n_res])."""
    chosen = choice[choice != NONE]
    idx = concat_ranges(model.use_ptr[chosen], model.use_ptr[chosen + 1])
    return np.bincount(
        model.use_res[idx], weights=model.use_amt[idx], minlength=model.n_res
    ).astype(np.int64)
