"""End to end on a generated market: generate -> build -> solve -> verify -> explain.

    python -m bench.market_bench                       # 20000 projects x 2000 sites, 60 s
    python -m bench.market_bench --projects 2000 --sites 500 --time-limit 5
    python -m bench.market_bench --projects 100000 --sites 10000 --checkpoints 1 \
        --cancel kernels:0.5          # cancel 0.5 s into the model assembly

The market is generated once; the whole matcher (matcher.market.match) then runs once per
checkpoint (fractions of --time-limit, each from scratch), which gives objective, bound and
gap as a function of the time allowed. Every result is verified against the model (the
objective is the verifier's) and its bound covers every eligible pair of the market.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time

import matcher
from matcher.control import Progress, RunControl
from matcher.generate import generate_market
from matcher.market import match
from matcher.problem import build_problem
from schemas.market import RunParams


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cancelling(spec: str | None, limit: float) -> tuple[RunControl | None, list]:
    """A run control that cancels itself ``SECONDS`` after ``PHASE`` is first reported, and
    the list that receives (moment of the cancel, phase then running)."""
    if not spec:
        return None, []
    phase, _, delay = spec.partition(":")
    done: list = []
    last: list[str] = []

    def cancel() -> None:
        done.append((time.perf_counter(), last[-1]))
        control.cancel()

    def on_progress(p: Progress) -> None:
        last.append(p.phase)
        if p.phase == phase and len(last) == last.index(phase) + 1:
            threading.Timer(float(delay or 0), cancel).start()

    control = RunControl(limit, on_progress=on_progress)
    return control, done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=20_000)
    ap.add_argument("--sites", type=int, default=2_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--k", type=int, default=16, help="candidates kept per project")
    ap.add_argument(
        "--capacity-scale",
        type=float,
        default=1.0,
        help="scale every site's capacity (< 1: a tight market)",
    )
    ap.add_argument(
        "--checkpoints", default="0.1,0.3,1", help="fractions of --time-limit, one run each"
    )
    ap.add_argument(
        "--cancel",
        metavar="PHASE:SECONDS",
        help="cancel each run from a timer thread this long after PHASE is first reported "
        "(e.g. kernels:0.5 lands in the model assembly) and print how long match took to return",
    )
    args = ap.parse_args(argv)
    out = sys.stdout.write
    fractions = sorted({float(x) for x in args.checkpoints.split(",") if x.strip()})

    # Every Numba function the matcher uses, as a worker does at start: a run never pays JIT.
    warm = matcher.warm_up()
    t0 = time.perf_counter()
    snap = generate_market(
        args.projects, args.sites, args.months, args.seed, capacity_scale=args.capacity_scale
    )
    gen_s = time.perf_counter() - t0
    base = RunParams(
        time_limit_s=args.time_limit,
        workers=args.workers,
        seed=args.seed,
        deterministic=args.deterministic,
        candidates_per_project=args.k,
    )
    t_build = time.perf_counter()
    problem = build_problem(snap, base)
    build_s = time.perf_counter() - t_build
    rss_build = _rss_mib()

    title = (
        f"{args.projects} projects x {args.sites} sites x {args.months} months, "
        f"capacity x{args.capacity_scale:g}"
    )
    out(f"# Market benchmark: {title}\n\n")
    out(f"matcher warm-up {warm:.2f} s, generate {gen_s:.2f} s, build {build_s:.2f} s (")
    out(", ".join(f"{k} {v:.2f} s" for k, v in problem.timings.items()) + ")\n")
    stats = problem.stats
    out(
        f"pairs {stats['pairs_evaluated']:.3e}, eligible {stats['eligible_pairs']:.3e}, "
        f"items {stats['items']:.0f}, candidates {stats['candidates']:.0f}, "
        f"resources {stats['resources']:.0f}\n\n"
    )
    out("| time limit s | wall s | first feasible s | status | objective | bound | gap | "
        "assigned | unassigned | columns priced in |\n")  # fmt: skip
    out("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
    notes: set[str] = set()
    for frac in fractions:
        # Each checkpoint is a separate run of the whole matcher (build, column generation
        # rounds, bound over the full market, verify, explain) from scratch.
        params = base.model_copy(update={"time_limit_s": max(0.1, frac * args.time_limit)})
        control, cancelled = _cancelling(args.cancel, params.time_limit_s)
        t_run = time.perf_counter()
        res = match(snap, params, control)
        run_s = time.perf_counter() - t_run
        if cancelled:
            t_cancel, phase = cancelled[0]
            back = time.perf_counter() - t_cancel
            out(f"cancelled in phase {phase} after {t_cancel - t_run:.2f} s: returned "
                f"{back:.2f} s later (partial {res.partial})\n")  # fmt: skip
        first = res.stats.get("first_feasible_s", float("nan"))
        out(
            f"| {params.time_limit_s:.1f} | {run_s:.2f} | {first:.3f} | {res.status} | "
            f"{res.objective:.0f} | {res.bound:.0f} | {res.gap:.4%} | "
            f"{res.stats['assigned_projects']:.0f} | {res.stats['unassigned_projects']:.0f} | "
            f"{res.stats.get('priced_candidates', 0):.0f} |\n"
        )
        notes.update(res.notes)
    for note in sorted(notes):
        out(f"\nnote: {note}")
    out(f"\npeak RSS {_rss_mib():.0f} MiB (after build {rss_build:.0f} MiB)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
