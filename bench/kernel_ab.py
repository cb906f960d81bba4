"""A/B of the scoring kernels: another revision's ``matcher/kernels.py`` against this one's.

    python -m bench.kernel_ab                        # main vs the working tree, 100000 x 10000
    python -m bench.kernel_ab --base HEAD~1 --threads 1 --rounds 10

Both modules score the same market (generated and encoded once) in one process, in rounds
that alternate which goes first, so that both see the same load; each prints the medians of
its wall and CPU seconds, and the median over rounds of the CPU ratio (this tree / base) is
the figure to judge a change by on a shared machine. Results must be identical (checked on
every pass's output). The base module is compiled from scratch (a temporary copy: its own
Numba cache), which takes a minute.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from matcher import kernels
from matcher.generate import generate_market
from matcher.problem import FIT_MARKET, encode
from schemas.market import RunParams

FIELDS = ("cand_ptr", "cand_site", "cand_value", "cand_cost", "counts", "outside_best")


def _module_at(rev: str, where: str):
    src = subprocess.run(
        ["git", "show", f"{rev}:matcher/kernels.py"], capture_output=True, text=True, check=True
    ).stdout
    path = os.path.join(where, "kernels_base.py")
    with open(path, "w") as fh:
        fh.write(src)
    spec = importlib.util.spec_from_file_location("kernels_base", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main", help="git revision of the other kernels")
    ap.add_argument("--projects", type=int, default=100_000)
    ap.add_argument("--sites", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=numba.get_num_threads())
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args(argv)
    numba.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = _module_at(args.base, tmp)
        snap = generate_market(args.projects, args.sites, args.months, args.seed)
        enc = encode(snap, RunParams(candidates_per_project=args.k))
        del snap
        sites, rows = enc.sites, enc.rows
        kw = {"k": args.k, "w_cost": RunParams().weights.cost, "fit_market": FIT_MARKET}
        mods = {args.base: base, "this tree": kernels}
        prep = {}
        for name, mod in mods.items():
            mod.warm_up()
            words = mod.group_words(sites, rows)
            prep[name] = (words, mod.lanes(sites, rows, words))
        wall: dict[str, list[float]] = {n: [] for n in mods}
        cpu: dict[str, list[float]] = {n: [] for n in mods}
        same = True
        load0 = os.getloadavg()
        for r in range(args.rounds):
            out = {}
            for name in list(mods)[:: 1 if r % 2 == 0 else -1]:
                words, layout = prep[name]
                t, c = time.perf_counter(), time.process_time()
                out[name] = mods[name].score_pairs(sites, rows, words, layout=layout, **kw)
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
            a, b = out.values()
            same &= all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
        load1 = os.getloadavg()
    w = sys.stdout.write
    w(f"{args.projects} x {args.sites} x {args.months}, {rows.n_rows} rows, threads "
      f"{args.threads}, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} "
      f"UTC, load average {load0[0]:.2f} before, {load1[0]:.2f} after\n")  # fmt: skip
    for name in mods:
        w(f"{name:>12}: wall median {statistics.median(wall[name]):.3f} s (min "
          f"{min(wall[name]):.3f}), CPU median {statistics.median(cpu[name]):.3f} s (min "
          f"{min(cpu[name]):.3f})\n")  # fmt: skip
    ratios = [x / y for x, y in zip(cpu["this tree"], cpu[args.base], strict=True)]
    w(f"CPU this tree / {args.base}: median over rounds {statistics.median(ratios):.3f} "
      f"({', '.join(f'{x:.3f}' for x in ratios)}); results identical: {same}\n")  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
