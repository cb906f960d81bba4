"""The optimisation core: market snapshot in, verified assignment out. No web, no database."""


def warm_up() -> float:
    """Compile (or load from the on-disk cache) every Numba function the matcher uses: the
    kernels (``matcher.kernels.warm_up``), the last pass and explanations
    (``matcher.complete.warm_up``) and the solver's (greedy, local search, Lagrangian,
    components), by solving a tiny market. Returns the seconds it took; call it once at
    worker / app start so that no run pays JIT time."""
    import time

    import numpy as np

    from matcher import complete, kernels, pairs
    from matcher.generate import generate_market
    from matcher.market import match
    from schemas.market import RunParams

    t0 = time.perf_counter()
    kernels.warm_up()
    complete.warm_up()  # the last pass and the explanations' scans and pair searches
    one = np.zeros(1, dtype=np.int64)
    pairs.merge_uses(np.zeros(2, dtype=np.int64), one[:0], one[:0], one, one, one)
    match(generate_market(12, 4, months=2, seed=0), RunParams(time_limit_s=0.5, workers=1))
    return time.perf_counter() - t0
