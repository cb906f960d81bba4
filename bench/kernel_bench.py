"""Eligibility + scoring + top-K over every project x site pair: Numba kernels vs NumPy twins.

    python -m bench.kernel_bench                       # 100000 x 10000 = 1e9 pairs
    python -m bench.kernel_bench --projects 2000 --sites 500

All run on the same arrays (a generated market, encoded once), in the same process: the
kernels, the pair-by-pair walk they replaced (``bench.walk_kernel``, timed alternately with
them so that both see the same load; results compared on every row) and the NumPy twin. The
load average is printed before and after, and CPU seconds beside wall seconds. The
NumPy twin builds its site table once (all groups), then scores rows in chunks; when all rows
would exceed --numpy-pairs it scores the first rows only and its row time is scaled linearly
to all rows (it is linear in rows); the output says so. Results are compared on the rows both
evaluated. Compile time is measured in a subprocess with an empty Numba cache, and the cached
warm-up in a second subprocess using that cache. Peak memory: the process's peak RSS after
each phase, and tracemalloc's peak for one call of each (NumPy and the Python-side buffers of
the kernels; the kernels' small per-task scratch arrays are not traced).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from bench.walk_kernel import score_pairs_walk
from matcher import kernels, reference
from matcher.generate import generate_market
from matcher.problem import FIT_MARKET, encode
from schemas.market import RunParams

WARM = "import time; t=time.perf_counter(); from matcher import kernels; kernels.warm_up(); "
WARM += "print(time.perf_counter()-t)"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _subprocess_warm_up(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", WARM], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _fmt(xs) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


def _peak_traced(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def _same(a: kernels.Scored, b: kernels.Scored, n: int) -> bool:
    if not np.array_equal(a.counts[:n], b.counts) or not np.array_equal(
        a.outside_best[:n], b.outside_best
    ):
        return False
    end = int(a.cand_ptr[n])
    return (
        np.array_equal(a.cand_ptr[: n + 1], b.cand_ptr)
        and np.array_equal(a.cand_site[:end], b.cand_site)
        and np.array_equal(a.cand_value[:end], b.cand_value)
        and np.array_equal(a.cand_cost[:end], b.cand_cost)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=100_000)
    ap.add_argument("--sites", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=16, help="candidates kept per project")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--numpy-pairs", type=float, default=5e7, help="most pairs given to the NumPy twin"
    )
    ap.add_argument("--numpy-repeats", type=int, default=3)
    ap.add_argument(
        "--walk-repeats", type=int, default=5, help="runs of the pair-by-pair walk (0: none)"
    )
    ap.add_argument("--skip-compile", action="store_true", help="skip the subprocess timings")
    args = ap.parse_args(argv)
    out = sys.stdout.write

    with tempfile.TemporaryDirectory() as cache:
        compile_s = None if args.skip_compile else _subprocess_warm_up(cache)
        cached_s = None if args.skip_compile else _subprocess_warm_up(cache)

    t0 = time.perf_counter()
    snap = generate_market(args.projects, args.sites, args.months, args.seed)
    t1 = time.perf_counter()
    enc = encode(snap, RunParams(candidates_per_project=args.k))
    t2 = time.perf_counter()
    del snap
    sites, rows = enc.sites, enc.rows
    n_rows, n_sites = rows.n_rows, sites.n_sites
    pairs = n_rows * n_sites
    rss_setup = _rss_mib()
    kw = {"k": args.k, "w_cost": RunParams().weights.cost, "fit_market": FIT_MARKET}

    kernels.warm_up()
    # Per market, not per pass (``Encoded.words`` and ``Encoded.lanes`` keep them for every
    # scoring pass of a run): built once here, outside the timed passes, and timed alone.
    t_words = time.perf_counter()
    words = kernels.group_words(sites, rows)
    t_lanes = time.perf_counter()
    lanes_kw = {}
    if kernels.method_for(rows, sites) == "lanes":
        lanes_kw["layout"] = kernels.lanes(sites, rows, words)
    t_layout = time.perf_counter()
    score_pairs_walk(sites, kernels.take_rows(rows, np.arange(min(n_rows, 8))), words, **kw)
    load0 = os.getloadavg()
    # Kernels and walk alternately (median of each): both see the same machine.
    nb_t, nb_cpu, wk_t, wk_cpu = [], [], [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        nb = kernels.score_pairs(sites, rows, words, **kw, **lanes_kw)
        nb_t.append(time.perf_counter() - t)
        nb_cpu.append(time.process_time() - c)
        if args.walk_repeats:
            t, c = time.perf_counter(), time.process_time()
            wk = score_pairs_walk(sites, rows, words, **kw)
            wk_t.append(time.perf_counter() - t)
            wk_cpu.append(time.process_time() - c)
            args.walk_repeats -= 1
    nb_s = statistics.median(nb_t)
    walk_same = _same(nb, wk, n_rows) if wk_t else None
    load1 = os.getloadavg()
    rss_numba = _rss_mib()
    nb_peak = _peak_traced(lambda: kernels.score_pairs(sites, rows, words, **kw, **lanes_kw))

    # NumPy: the site table once (it covers every group, whatever the rows), then the rows.
    n_np = int(min(n_rows, max(1, args.numpy_pairs // max(n_sites, 1))))
    sub = kernels.take_rows(rows, np.arange(n_np))
    table_s, table = _timed(lambda: reference.site_table(sites, rows), 1)
    np_s, npr = _timed(lambda: reference.score_pairs(sites, sub, table, **kw), args.numpy_repeats)
    np_peak = _peak_traced(lambda: reference.score_pairs(sites, sub, table, **kw))
    rss_numpy = _rss_mib()
    agree = _same(nb, npr, n_np)  # type: ignore[arg-type]
    np_pairs = n_np * n_sites
    np_total = table_s + np_s * n_rows / n_np  # measured when n_np == n_rows
    nb_rate, np_rate = pairs / nb_s, pairs / np_total

    counts = nb.counts.sum(axis=0)  # type: ignore[attr-defined]
    title = f"{args.projects} projects x {args.sites} sites x {args.months} months"
    out(f"# Kernel benchmark: {title}\n\n")
    method = "lanes" if pairs >= kernels.LANES_MIN_PAIRS else "walk"
    out(f"rows (items) {n_rows}, pairs {pairs:.3e}, threads {kernels_threads()}, k {args.k}, "
        f"kernel method at this size: {method}\n")  # fmt: skip
    out(f"generate {t1 - t0:.2f} s, encode {t2 - t1:.2f} s; once per market: group words "
        f"{t_lanes - t_words:.3f} s, lane layout {t_layout - t_lanes:.3f} s\n")  # fmt: skip
    names = (*kernels.RULES, "eligible")
    shares = ", ".join(f"{r} {c / max(pairs, 1):.4f}" for r, c in zip(names, counts, strict=True))
    out(f"share of pairs rejected by each rule (in order), then eligible: {shares}\n\n")
    out("| implementation | pairs | seconds | pairs/s | speed-up |\n")
    out("|---|---:|---:|---:|---:|\n")
    ratio = nb_rate / np_rate
    out(f"| Numba kernels (median of {args.repeats}) | {pairs:.3e} | {nb_s:.3f} | "
        f"{nb_rate:.3e} | {ratio:.1f}x |\n")  # fmt: skip
    if wk_t:
        wk_s = statistics.median(wk_t)
        out(f"| pair-by-pair walk (median of {len(wk_t)}) | {pairs:.3e} | {wk_s:.3f} | "
            f"{pairs / wk_s:.3e} | {pairs / wk_s / np_rate:.1f}x |\n")  # fmt: skip
    how = "measured" if n_np == n_rows else "extrapolated"
    out(f"| NumPy twin ({how}) | {pairs:.3e} | {np_total:.3f} | {np_rate:.3e} | 1.0x |\n\n")
    out(f"NumPy twin: site table {table_s:.3f} s (all groups, once) + rows {np_s:.3f} s "
        f"(median of {args.numpy_repeats}) for the first {n_np} of {n_rows} rows "
        f"({np_pairs:.3e} pairs)")  # fmt: skip
    if n_np < n_rows:
        out("; the row part is scaled linearly to all rows")
    out(".\n")
    out(f"results identical on the rows both evaluated: {agree}\n")
    out(f"kernels: wall {_fmt(nb_t)} s, CPU {_fmt(nb_cpu)} s\n")
    if wk_t:
        out(f"walk: wall {_fmt(wk_t)} s, CPU {_fmt(wk_cpu)} s; kernels vs walk: "
            f"{statistics.median(wk_t) / nb_s:.2f}x wall, "
            f"{statistics.median(wk_cpu) / statistics.median(nb_cpu):.2f}x CPU (medians); "
            f"results identical on every row: {walk_same}\n")  # fmt: skip
    out(f"load average (1, 5, 15 min) before {_fmt(load0)}, after {_fmt(load1)}\n")
    if compile_s is not None:
        out(f"first call with an empty Numba cache (compile): {compile_s:.2f} s\n")
        out(f"warm_up() with the cache filled: {cached_s:.2f} s\n")
    out(
        f"peak RSS: {rss_setup:.0f} MiB after setup, {rss_numba:.0f} MiB after Numba runs, "
        f"{rss_numpy:.0f} MiB after NumPy runs\n"
    )
    out(
        f"peak traced allocations per call: Numba {nb_peak:.0f} MiB, NumPy twin rows "
        f"{np_peak:.0f} MiB ({n_np} rows, in chunks)\n"
    )
    return 0 if agree and walk_same is not False else 1


def kernels_threads() -> int:
    import numba

    return numba.get_num_threads()


if __name__ == "__main__":
    raise SystemExit(main())
