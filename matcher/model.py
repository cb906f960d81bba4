"""The generic assignment model every solve goes through.

A multi-resource generalised assignment problem with side constraints, in flat arrays:

* items (projects, or GAP jobs) choose at most one candidate (exactly one when
  ``must_assign``); a candidate is an (item, bin) pair with an integer value to maximise;
* each candidate uses integer amounts of some resources (site x process x month, or a GAP
  agent), and every resource has an integer capacity;
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
    outside_best: np.ndarray = field(default=None)  # type: ignore[assignment]  # int64 [n_items]

    def __post_init__(self) -> None:
        if self.outside_best is None:
            object.__setattr__(
                self, "outside_best", np.full(self.n_items, np.iinfo(np.int64).min // 4)
            )

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
