"""One run control per solve (deadline or deterministic budget, cancel, progress) and one
parameters object (``SolveParams``: every solver knob, each with why it has its value).

A ``RunControl`` is made once by whoever starts a solve (the CLI, a worker, a test) and handed
down to every phase. Any thread may call ``cancel()``; every phase asks ``stop_requested()`` /
``left()`` and returns its best verified answer so far; a running CP-SAT search is stopped
through ``on_cancel`` hooks (``CpSolver.stop_search``). Phases take their time as slices of
the same deadline (``slice``), so the time limit is spent once, never re-derived. Progress goes
to one callback as ``Progress`` records.

This module is the contract between the matcher and its callers (``service/flows`` uses it for
match runs): keep its public names stable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Progress:
    """One progress report: what the solve is doing and how good its answer is so far."""

    phase: str  # encode, kernels, build, heuristics, bound, cpsat, lns, price, market_bound, ...
    elapsed_s: float
    objective: float | None = None  # best verified objective so far
    bound: float | None = None  # best proven upper bound so far
    placed: int | None = None  # projects placed in the best answer so far

    @property
    def gap(self) -> float | None:
        if self.objective is None or self.bound is None:
            return None
        return (self.bound - self.objective) / max(1.0, abs(self.bound))


ProgressCallback = Callable[[Progress], None]

# A cancel flag never set, for Numba loops run without a control (``RunControl.flag``).
NO_STOP = np.zeros(1, np.uint8)


class Stopped(Exception):  # noqa: N818 (a signal, not an error)
    """A phase was stopped (a cancel) before it produced anything usable."""


@dataclass
class RunControl:
    """Deadline, cancel flag and progress sink of one solve.

    ``time_limit_s`` counts from construction. In deterministic mode the wall clock never cuts a
    phase (phases use fixed shares of ``time_limit_s`` as CP-SAT deterministic time instead),
    but a cancel still stops the run.
    """

    time_limit_s: float
    deterministic: bool = False
    on_progress: ProgressCallback | None = None
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)
    _cancel: threading.Event = field(init=False, default_factory=threading.Event)
    # The cancel flag as an array that Numba loops read while they run (``flag``).
    _flag: np.ndarray = field(init=False, default_factory=lambda: np.zeros(1, np.uint8))
    _last: Progress | None = field(init=False, default=None)
    _first_feasible_s: float | None = field(init=False, default=None, repr=False)
    _root: RunControl | None = field(init=False, default=None, repr=False)
    _hooks: dict[int, Callable[[], None]] = field(init=False, default_factory=dict, repr=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    # --- time and cancel ---------------------------------------------------------------
    @property
    def deadline(self) -> float:
        return self.start + self.time_limit_s

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left before the deadline; 0 once cancelled."""
        if self.cancelled:
            return 0.0
        return max(0.0, self.deadline - self.clock())

    def cancel(self) -> None:
        """Ask the solve to stop as soon as it can (safe from any thread): running CP-SAT
        searches registered with ``on_cancel`` are stopped at once."""
        root = self._root or self
        root._flag[0] = 1
        root._cancel.set()
        with root._lock:
            hooks = list(root._hooks.values())
        for hook in hooks:
            # On a thread of its own: the cancel may come from inside a CP-SAT callback (a
            # progress sink that cancels), where stopping that search synchronously could
            # wait on the search itself.
            threading.Thread(target=hook, name="run-control-stop", daemon=True).start()

    @contextmanager
    def on_cancel(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call ``hook`` (e.g. ``CpSolver.stop_search``) if the run is cancelled while inside
        the block; at once if it already is."""
        root = self._root or self
        key = id(hook)
        with root._lock:
            root._hooks[key] = hook
        try:
            if root._cancel.is_set():
                hook()
            yield
        finally:
            with root._lock:
                root._hooks.pop(key, None)

    def slice(self, seconds: float | None = None, *, fraction: float | None = None) -> RunControl:
        """A control for one phase: the same cancel flag and progress sink, a deadline at most
        ``seconds`` (or ``fraction`` of what is left) from now and never past this one's. In
        deterministic mode the slice is a budget of deterministic time instead."""
        now = self.clock()
        left = 0.0 if self.cancelled else max(0.0, self.deadline - now)
        if fraction is not None:
            seconds = left * fraction
        budget = left if seconds is None else min(seconds, left)
        if self.deterministic and seconds is not None:
            budget = seconds  # deterministic budgets are shares of the limit, not of a clock
        child = RunControl(max(0.0, budget), self.deterministic, None, self.clock)
        child.start = now
        child._root = self._root or self
        return child

    @property
    def cancelled(self) -> bool:
        return (self._root or self)._cancel.is_set()

    @property
    def flag(self) -> np.ndarray:
        """uint8 [1], 1 once cancelled: long Numba loops (``nogil``, so that ``cancel()`` runs
        meanwhile) read it every few thousand steps and stop early."""
        return (self._root or self)._flag

    def run_over(self) -> bool:
        """True once cancelled or (outside deterministic mode) past the deadline of the whole
        run (the root control), whatever this slice's own deadline: a phase that may outlive
        its slice (e.g. the bound's first steps) still stops there."""
        root = self._root or self
        return root.stop_requested()

    def stop_requested(self) -> bool:
        """True once cancelled or (outside deterministic mode) past the deadline."""
        if self.cancelled:
            return True
        return not self.deterministic and self.clock() >= self.deadline

    # --- progress ----------------------------------------------------------------------
    def report(
        self,
        phase: str,
        *,
        objective: float | None = None,
        bound: float | None = None,
        placed: int | None = None,
    ) -> None:
        """Send a progress record. Unknown figures keep their last value; the objective
        kept is the best reported so far (every one reported is that of a feasible answer)
        and the bound the lowest (every one reported is valid). Slices report to their root:
        elapsed time counts from the start of the run."""
        root = self._root or self
        with root._lock:
            last = root._last
            if last is not None:
                if last.objective is not None and (objective is None or objective < last.objective):
                    objective, placed = last.objective, last.placed
                if last.bound is not None and (bound is None or bound > last.bound):
                    bound = last.bound
                placed = last.placed if placed is None else placed
            progress = Progress(phase, root.elapsed(), objective, bound, placed)
            if objective is not None and root._first_feasible_s is None:
                root._first_feasible_s = progress.elapsed_s
            root._last = progress
        if root.on_progress is not None:
            root.on_progress(progress)

    @property
    def first_feasible_s(self) -> float | None:
        """Seconds from the start of the run to the first answer reported with an objective."""
        return (self._root or self)._first_feasible_s

    @property
    def last_progress(self) -> Progress | None:
        return (self._root or self)._last


@dataclass(frozen=True)
class SolveParams:
    """Every solver knob in one place, each with the reason for its value.

    ``time_limit_s``, ``workers``, ``seed`` and ``deterministic`` come from the caller
    (``schemas.market.RunParams``, ``cdmo gap``); the rest are tuned defaults.
    """

    time_limit_s: float = 30.0
    workers: int = 2  # CP-SAT workers; LNS runs beside the whole model when >= 2
    seed: int = 0
    deterministic: bool = False  # one worker, CP-SAT deterministic time, no clock cut-offs

    # --- decomposition ---------------------------------------------------------------------
    # A part with at most this many candidates is also given to CP-SAT whole: above it the
    # CP-SAT model takes longer to build than the LNS needs to beat it.
    exact_limit: int = 200_000
    # Small components are bundled into models of about this many candidates, so CP-SAT is
    # called a few times rather than once per tiny component.
    bundle_candidates: int = 50_000

    # --- heuristics --------------------------------------------------------------------------
    # Swap passes of the local search on small models; a pass costs about a second per
    # ``local_search_work`` candidates, so big models get fewer, huge ones none.
    local_search_passes: int = 50
    local_search_work: int = 500_000
    # Above this many candidates (a warm start exists by then) no local search at all.
    local_search_max_candidates: int = 2_000_000
    # A pass costs about this many greedy runs on the same model (1.4-1.8 s against 0.08 s
    # on the 307k candidates of a 20000 x 2000 market); it is started only when it takes at
    # most this share of the time left, so that LNS keeps time too and the deadline is kept.
    local_search_greedy_passes: float = 25.0
    local_search_share: float = 0.25

    # --- Lagrangian bound --------------------------------------------------------------------
    bound_iterations: int = 1000  # subgradient steps at most (deterministic mode runs all)
    bound_share: float = 0.1  # of a part's time for the bound
    bound_min_s: float = 0.5  # the prices need a few dozen steps to mean anything
    # Prices are only usable after this many steps (fewer on huge models, where a step is
    # slow); the clock is obeyed after them.
    bound_min_steps: int = 50
    bound_min_steps_huge: int = 10
    bound_huge_uses: int = 20_000_000  # resource uses from which a model is "huge"
    # Work between two clock checks, in resource uses (a few hundredths of a second).
    bound_check_uses: int = 20_000_000

    # --- CP-SAT and LNS ------------------------------------------------------------------------
    # Run LNS beside the whole-model CP-SAT (it shares the cores with it).
    lns_beside_whole: bool = True
    # Hint the whole model with the heuristic answer. Off: on tight GAPs a hint pins CP-SAT's
    # search near it (measured worse than no hint at 10 s on d30900).
    hint_whole: bool = False
    lns_candidates: int = 400  # initial neighbourhood size, adapted as LNS runs
    lns_min_candidates: int = 50  # the neighbourhood never shrinks below this
    lns_max_factor: float = 10.0  # ... nor grows beyond this x ``lns_candidates``
    lns_grow: float = 1.25  # sub-solve proved optimal quickly: larger neighbourhoods
    lns_shrink: float = 0.8  # sub-solve not proved optimal: smaller ones
    lns_fast: float = 0.3  # "quickly" = within this fraction of the sub-solve's time
    lns_subsolve_s: float = 0.25  # wall time of one sub-solve
    lns_deterministic_step: float = 0.1  # deterministic time of one sub-solve
    lns_min_left_s: float = 0.02  # no sub-solve is started with less than this left
    # Deterministic mode: shares of a part's budget for repair LNS, LNS, and the whole model.
    repair_share: float = 0.25
    lns_share: float = 0.5

    # --- market (column generation) --------------------------------------------------------
    # Shares of the time left for the successive solves: on the candidate lists by value,
    # then after each round of pricing; the last solve takes whatever is left.
    round_shares: tuple[float, ...] = (0.3, 0.35)
    # A pricing round costs about this many first kernel passes (the pass with prices, the
    # merge of the lists) plus this many model builds (the model rebuilt, about twice as
    # big): the first estimate; later rounds use the measured cost of the previous one.
    price_kernel_passes: float = 3.0
    price_model_passes: float = 2.0
    # A round is started only when this many of its estimated cost are left.
    price_margin: float = 1.5
    # Time kept for the final market bound is at most this share of the limit.
    reserve_share: float = 0.25
    # No solve round is given less than this.
    min_round_s: float = 0.1
    # The final bound over every eligible pair is one kernel pass with prices: about this
    # many of the first kernel pass. Skipped (the solver's bound stands) when it does not fit.
    # With the scan of the two-source projects' lists (matcher.pricing.pair_lists) the first
    # market pass took 1.4 of them at 100000 x 10000 (1.2 s + 2.3 s against 2.5 s, load 4.5),
    # about 3 at 20000 x 2000 (0.9 s), where the share kept for the steps covers it.
    market_bound_kernel_passes: float = 1.5
    # Subgradient steps on the market's own Lagrangian after that pass (one kernel pass
    # each, matcher.pricing.market_bound: every eligible pair priced, the second-source links
    # and pair rules kept), for ``market_steps_share`` of the limit when the first solve's
    # bound takes less than ``market_steps_below_gain`` off the per-item bound (the model's
    # prices then say little about the market: 0.09 % at 100000 x 10000, where a step took
    # 0.3-0.5 % off the gap and the same time in LNS less than 0.05 %; at 180 s 14 steps
    # fitted in the 34 s kept when a step count set it, each still gaining), otherwise for
    # ``market_steps_priced_share`` (20000 x 2000 seed 2: the first pass 145.13 M, 40 steps
    # 145.05 M, 20 s at load 2.5; 60 s and 180 s of solving give the same answer). 0: no
    # steps, the model's Lagrangian is polished instead (``bound_polish_*``). Deterministic
    # mode runs ``market_bound_steps`` steps.
    # Step scale at first (halved after a step without a better bound), stopped below the
    # last (20000 x 2000: stopped at 0.05 after 8 steps, 145.08 M, where 40 steps of plain
    # subgradient went on to 145.05 M).
    market_steps_below_gain: float = 0.005
    market_bound_steps: int = 8
    market_steps_share: float = 0.4
    market_steps_priced_share: float = 0.2
    market_step_theta: float = 1.0
    market_min_theta: float = 0.005
    # The optional final bounds (market bound, LP) may use this share of the limit beyond the
    # deadline (the run's promise is the limit + 5 % + 1 s).
    bound_overrun_share: float = 0.02
    # The LP relaxation with the second-source links (GLOP) is solved once, after the first
    # round, on models up to this many candidates (about 2 s for 3,000 candidates of an
    # 800 x 80 market on a loaded machine), within this share of the limit.
    lp_max_candidates: int = 60_000
    lp_share: float = 0.2
    # Deterministic mode: a limit only as a safety net, so the bound does not depend on
    # the clock (GLOP is deterministic when it finishes).
    lp_deterministic_s: float = 120.0
    # The split bound (matcher.split_bound: a 0-1 knapsack per priced, overfilled resource,
    # by DP over at most ``split_states`` capacity units, in place of the LP's fractions)
    # runs after the first round, for at most ``split_share`` of the limit and
    # ``split_max_steps`` steps, with the finest units (``split_states`` halved down to
    # ``split_min_states``) whose step fills at most ``split_max_work`` DP cells (~8 ms a
    # step): on 1000 x 100 markets 300-400 steps took 0.2 % off a bound 0.46 % above the
    # exact one. At 20000 x 2000 a step was 1.2 M copies x 512 units,
    # 0.8 s, and 100 steps gained 0.006 % (there the rows' unpriced outside options hold
    # the bound up, not the fractions). Models above ``split_max_candidates`` are not even
    # costed (the count is a pass over every use: 0.3 s at 100000 x 10000). Coarser units
    # buy steps: at 2000 x 200, 512 units (6.8 M cells) rather than 4096 (17 M) gave twice
    # the steps of a 10 s run and a tighter bound (seed 2: 12,883,072 against 12,886,520,
    # load 4-5); where the steps converge in time, exact DPs are tighter (800 x 80: 0.11 %
    # above SCIP's bound with 4096 units, 0.18 % with 512).
    split_states: int = 4096
    split_min_states: int = 256
    split_share: float = 0.15
    split_max_steps: int = 2000
    split_max_work: int = 8_000_000
    split_max_candidates: int = 100_000
    # Markets up to this many project x site pairs (and sites) get complete candidate
    # lists, so that their model's bound needs no unpriced outside options and the split
    # bound applies (the lists hold eligible sites only: ~10 a project at 2000 x 200).
    complete_lists_max_pairs: int = 1_000_000
    complete_lists_max_sites: int = 256
    # The phases that follow the solve, in units of this run's encoding time (measured on
    # 20000 x 2000: packaging and verifying ~1.1 x encode, explaining every row ~1.5 x
    # encode, both 3-4x slower on a loaded machine, like encoding): time kept for them.
    result_encode_passes: float = 1.2
    explain_encode_passes: float = 1.5
    # Seconds per row x site for rows explained against every site (no eligible site).
    explain_s_per_row_site: float = 1e-6
    # After the explanations, the projects they prove unplaceable in the whole market (no
    # pair of sources respects the separation or the budget) are taken off the Lagrangian
    # bound: one evaluation at the final prices (~0.05 s per 4M resource uses), skipped on
    # models with more uses than this (100000 x 10000: ~36M) unless deterministic.
    structural_bound_max_uses: int = 20_000_000
    # Time left once the answer is verified and explained goes on tightening the bound: more
    # subgradient steps from the solve's prices (on 100000 x 10000 the solve affords ~10
    # steps and the last pass and explanations often finish early). Only started with at
    # least this much left (a step there is 0.1-0.3 s), ended this far before the deadline,
    # at this step scale (the prices are already good: smaller steps).
    bound_polish_min_s: float = 1.0
    bound_polish_margin_s: float = 0.3
    bound_polish_theta: float = 0.5
    # Explanations stop (the rest listed as not explained) this far past the deadline.
    explain_grace_share: float = 0.03
    explain_grace_s: float = 0.5


@dataclass(frozen=True)
class GapParams:
    """Knobs of the plain-GAP path (``matcher.gap_solve``), each with why it has its value.

    Shares are of the solve's time limit; the phases run one after the other on the same
    cores, and CP-SAT on the reduced model takes whatever is left.
    """

    # Subgradient steps on the knapsack Lagrangian: ~300 steps reach 0.05 % of the best-known
    # value on d/e 200-400 job instances, about 1 s on a quiet core.
    lagrange_share: float = 0.15
    # A first answer (greedy, short tabu walk): the Lagrangian's Polyak target.
    first_search_share: float = 0.05
    # ... and at most this much more while the walk has no feasible answer: on d801600 at 10 s
    # a feasible hint after 2.5 s took CP-SAT to 4.3 % where it reached 8.1 % without one.
    first_feasible_share: float = 0.2
    # Polyak target while no answer is known: the bound plus this share of it.
    target_share: float = 0.05
    # Tabu search seeded from the Lagrangian (pair bounds as greedy costs), over the pairs
    # that may lie in an answer within ``search_window`` (relative) of the bound.
    search_share: float = 0.05
    search_window: float = 0.01
    # Polyak step factor at the start; halved after 20 steps without a better bound.
    step_factor: float = 0.5
    # The knapsack Lagrangian starts from the prices of the capacity-relaxed Lagrangian
    # (m multipliers, a step costs m x n): at most ``price_steps`` steps, ``price_chunk`` per
    # Numba call at first. ~600 reach the LP bound on d801600 in 0.2 s (= its optimum, 97034),
    # where 100 knapsack steps from the second-cheapest costs took 1.2-20 s and stayed 0.7 %
    # below. The knapsack steps then go on with the small step factor ``price_step_factor``:
    # the multipliers start close to the optimum, and the dives start from them. 1.0 reached
    # a slightly better bound on 7 of 9 B-E instances run to convergence (b10200: 2825.4
    # against 2824.9, one unit after rounding), but its multipliers dived worse at 10 s
    # (e40400 0.95-1.13 % against 0.09-0.12 %, E mean 0.224 % against 0.162 %, load 5-7).
    price_steps: int = 2000
    price_chunk: int = 50
    price_step_factor: float = 0.1
    # Search iterations per Numba call at first (doubled while a call takes under 20 ms).
    search_chunk: int = 8
    # Lagrangian steps per Numba call at most (deterministic mode: exactly): a step's cost
    # grows tenfold as the multipliers rise, so doubling the calls freely overran the limit
    # by 5 s on d801600.
    lagrange_chunk: int = 10
    # The market solver's CP-SAT search gets what is left after its model is built
    # (matcher.cpsat.run); past the whole limit less this margin (a loaded machine may still
    # overrun in the steps around the search) it is stopped by a cancel of its own control.
    cpsat_stop_margin_s: float = 0.3
    # Share of the limit always kept for CP-SAT on the reduced model: the earlier phases
    # stop short of it even when Numba compiles or the machine is loaded, so CP-SAT always
    # runs (it found answers where the search did not, e.g. e-type starts).
    cpsat_reserve_share: float = 0.3
    # A phase that could not do this much work in its share at its current speed (a big
    # instance on a loaded machine: d801600 got 36 steps and 40 iterations in 10 s) stops
    # there and leaves its time to the next phases (at 10 s: CP-SAT on 900-1600 D jobs).
    lagrange_least_steps: int = 100
    search_least_iterations: int = 300
    # Deterministic mode: fixed work instead of clock shares.
    lagrange_steps_deterministic: int = 400
    search_iterations_deterministic: int = 4000
    # Adaptive penalties: x rise per iteration an agent is over capacity, x fall per
    # feasible iteration (Yagiura-style: the walk oscillates around the feasibility border).
    penalty_rise: float = 1.01
    penalty_fall: float = 0.99
    # ... kept within these multiples of the start (cost spread / mean weight): unbounded,
    # they drift to extremes and the walk stalls for good (measured on d20200).
    penalty_min: float = 0.05
    penalty_max: float = 20.0
    # Tabu tenure drawn in [n / tenure_lo_div, n / tenure_hi_div] iterations (at least 3..5):
    # 5..10 on 200 jobs halved the gap left after 8000 iterations on d20200 against 10..25.
    tenure_lo_div: int = 40
    tenure_hi_div: int = 20
    # Ejection chains move each of their two jobs only to one of its this many cheapest
    # agents (Yagiura et al. restrict the chains the same way): ~9 n^2 / m evaluations.
    chain_agents: int = 3
    # Lagrangian dives (``gap_solve._dive``): subgradient steps per level from the
    # multipliers so far, the Polyak target (share above the level's bound), the step factor
    # (small: the multipliers start near the optimum), the agreement above which more than
    # one column is fixed per level, the noise on the columns' scores after the first dive,
    # and the tabu iterations that polish (and repair) each dive's answer.
    dive_share: float = 0.35
    dive_steps: int = 20
    dive_target_share: float = 0.002
    dive_step_factor: float = 0.5
    dive_fix_agreement: float = 0.9
    dive_fix_share: float = 0.2
    dive_noise: float = 0.3
    dive_walk_iterations: int = 300
    dives_deterministic: int = 3
    # After each dive, the best answer is recombined with ``cross_elites`` of the ``elites``
    # best distinct answers so far (``gap_exact.resolve_jobs``): CP-SAT on the jobs where
    # they differ from it (at most ``cross_jobs``, a random subset beyond), for at most
    # ``cross_seconds``, and in all at most ``cross_share`` of the time the dives have taken:
    # unbounded (a re-solve after every dive), 100-400 job D instances lost 0.05-0.8 % at 10 s
    # (far fewer dives) while C gained ~0.02 points of mean gap (load 4-5). 0 turns it off.
    elites: int = 10
    cross_share: float = 0.25
    cross_elites: int = 2
    cross_jobs: int = 120
    cross_seconds: float = 0.3
    # Tabu walks on parts of the best answer (``part_agents`` agents with most cheap jobs in
    # common, the jobs they hold): ``part_iterations`` each.
    parts_share: float = 0.1
    part_agents: int = 8
    part_near: int = 4
    part_iterations: int = 1500
    parts_deterministic: int = 5
    # Iterations without a better answer before restarting from the best with n / kick_div
    # random shifts.
    stall_iterations: int = 2000
    kick_div: int = 50
