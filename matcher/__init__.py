"""The optimisation core: market snapshot in, verified assignment out. No web, no database."""


def warm_up() -> float:
    """Compile (or load from the on-disk cache) every Numba function the matcher uses: the
    kernels (``matcher.kernels.warm_up``), the last pass and explanations
    (``matcher.complete.warm_up``), the split bound (``matcher.split_bound.warm_up``) and
    the solver's (greedy, local search, Lagrangian, components), by solving a tiny market.
    Returns the seconds it took; call it once at worker / app start so that no run pays JIT
    time."""
    import time

    from matcher import complete, kernels, pricing, split_bound
    from matcher.generate import generate_market
    from matcher.market import match
    from schemas.market import RunParams

    t0 = time.perf_counter()
    kernels.warm_up()
    complete.warm_up()  # the last pass and the explanations' scans and pair searches
    pricing.warm_up()  # column generation's list merge
    split_bound.warm_up()  # the knapsack bound of small models
    match(generate_market(12, 4, months=2, seed=0), RunParams(time_limit_s=0.5, workers=1))
    return time.perf_counter() - t0
