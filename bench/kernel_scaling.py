"""How the kernel pass grows with projects, sites and months: measured at several sizes, fitted.

    python -m bench.kernel_scaling                     # eight sizes up to 40000 x 4000
    python -m bench.kernel_scaling --with-largest      # and 100000 x 10000 x 12

Each size is a generated market (seed 0), encoded once; the lane kernels (``score_pairs``, k = 16,
method "lanes") and the pair-by-pair walk (method "walk") run alternately, median of
``--repeats`` of each, wall and CPU seconds. Then ``seconds = c * P^a * S^b * T^g`` is fitted
by least squares on logarithms (CPU seconds: the machine is shared, and CPU time follows the
work more closely than wall time), and the fit is used to project a market 10x larger in
projects and sites. The load average is printed with every size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from bench.walk_kernel import score_pairs_lanes, score_pairs_walk
from matcher import kernels
from matcher.generate import generate_market
from matcher.problem import FIT_MARKET, encode
from schemas.market import RunParams

SIZES = (
    (10_000, 1_000, 12),
    (20_000, 2_000, 12),
    (40_000, 4_000, 12),
    (40_000, 1_000, 12),
    (10_000, 4_000, 12),
    (20_000, 2_000, 6),
    (20_000, 2_000, 24),
)
LARGEST = (100_000, 10_000, 12)


def _timed(fn, *args, **kw) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn(*args, **kw)
    return time.perf_counter() - t, time.process_time() - c


def fit(points: list[tuple[int, int, int]], seconds: list[float]) -> np.ndarray:
    """Least squares of log(seconds) on [1, log P, log S, log T]: (log c, a, b, g)."""
    x = np.array([[1.0, np.log(p), np.log(s), np.log(t)] for p, s, t in points])
    coef, *_ = np.linalg.lstsq(x, np.log(np.asarray(seconds)), rcond=None)
    return coef


def _r2(coef: np.ndarray, points, seconds) -> float:
    x = np.array([[1.0, np.log(p), np.log(s), np.log(t)] for p, s, t in points])
    y = np.log(np.asarray(seconds))
    res = y - x @ coef
    return 1.0 - float(res @ res) / float(((y - y.mean()) ** 2).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--with-largest", action="store_true", help="also 100000 x 10000 x 12")
    args = ap.parse_args(argv)
    out = sys.stdout.write
    sizes = SIZES + ((LARGEST,) if args.with_largest else ())
    kw = {"k": 16, "w_cost": RunParams().weights.cost, "fit_market": FIT_MARKET}
    kernels.warm_up()
    out("| projects | sites | months | rows | pairs | eligible | kernels wall / CPU s | "
        "walk wall / CPU s | lane columns MiB | load (1 min) |\n")  # fmt: skip
    out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    pts, k_cpu, w_cpu = [], [], []
    for p, s, t in sizes:
        enc = encode(generate_market(p, s, t, 0), RunParams(candidates_per_project=16))
        sites, rows, words = enc.sites, enc.rows, enc.words
        lane = kernels.lanes(sites, rows, words)
        col_mib = (lane.price.nbytes + lane.free.nbytes) / 2**20
        del lane
        score_pairs_walk(sites, kernels.take_rows(rows, np.arange(4)), words, **kw)
        kw_t, kc_t, ww_t, wc_t = [], [], [], []
        for _ in range(args.repeats):  # alternately: both see the same load
            a, b = _timed(score_pairs_lanes, sites, rows, words, **kw)
            kw_t.append(a)
            kc_t.append(b)
            a, b = _timed(score_pairs_walk, sites, rows, words, **kw)
            ww_t.append(a)
            wc_t.append(b)
        sc = score_pairs_lanes(sites, rows, words, **kw)
        pts.append((p, s, t))
        k_cpu.append(statistics.median(kc_t))
        w_cpu.append(statistics.median(wc_t))
        out(f"| {p} | {s} | {t} | {rows.n_rows} | {rows.n_rows * sites.n_sites:.3e} | "
            f"{int(sc.counts[:, kernels.ELIGIBLE].sum()):.3e} | "
            f"{statistics.median(kw_t):.3f} / {k_cpu[-1]:.3f} | "
            f"{statistics.median(ww_t):.3f} / {w_cpu[-1]:.3f} | {col_mib:.0f} | "
            f"{os.getloadavg()[0]:.1f} |\n")  # fmt: skip
        sys.stdout.flush()
    out("\nFit of CPU seconds = c * P^a * S^b * T^g (least squares on logarithms):\n\n")
    for name, secs in (("kernels", k_cpu), ("walk", w_cpu)):
        coef = fit(pts, secs)
        big = float(np.exp(coef @ [1.0, np.log(1e6), np.log(1e5), np.log(12)]))
        out(f"- {name}: a = {coef[1]:.2f} (projects), b = {coef[2]:.2f} (sites), "
            f"g = {coef[3]:.2f} (months), R^2 = {_r2(coef, pts, secs):.3f}; "
            f"projected 1,000,000 x 100,000 x 12: {big:.0f} CPU s\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
