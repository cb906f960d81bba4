"""The two ways ``matcher.kernels.score_pairs`` scores, by name, whatever the size.

The kernels take the pair-by-pair walk for small calls and score lanes for large ones. The
benchmarks time the walk beside the lanes in the same run (so that their ratio holds on a
noisy machine), and the tests hold the two to the same bits.
"""

from __future__ import annotations

from functools import partial

from matcher.kernels import score_pairs

score_pairs_walk = partial(score_pairs, method="walk")
score_pairs_lanes = partial(score_pairs, method="lanes")
