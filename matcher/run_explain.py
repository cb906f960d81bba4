"""Explanations of a finished run, computed from its snapshot and answer (not templated).

Everything here works on a *view* of a finished run: the snapshot re-encoded exactly as the
run encoded it, with the run's placements laid over it (``used``, ``residual`` in whole hours).
Values come from ``matcher.pricing.value_parts`` (the one value formula), eligibility from
``matcher.reference``'s rules (the NumPy twin of the kernels), so nothing here is a second copy
of either. ``why_here``: a placement's value in parts, its rank and the next best alternatives;
``why_not``: the binding reason with figures; ``utilisation`` and ``bottlenecks`` of a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher import reference
from matcher.encode import (
    CATEGORIES,
    CERT_KINDS,
    CLASSES,
    FIT_QUALITY,
    N_PROC,
    REGIONS,
    Encoded,
    encode,
)
from matcher.explain import EXPLAIN_CHUNK, RULE_REASON, SHORTFALL_SITES, SHORTFALLS_PER_SITE
from matcher.kernels import (
    ELIGIBLE,
    MKT_SHIFT,
    PROC_SHIFT,
    R_CAPACITY,
    R_CERT,
    R_MARKET,
    R_PROCESS,
    RULES,
)
from matcher.problem import PROCESSES, ROLE_SECOND
from schemas.market import (
    MARKET_ACCESS_CERTIFICATE,
    BlockReason,
    MarketSnapshot,
    Role,
    RunParams,
)

ALTERNATIVES = 3  # eligible alternatives listed per placement
NEAR_MISSES = 2  # ineligible sites listed per placement when they would be worth more
PART_NAMES = ("priority", "quality", "market", "cost", "stability")


@dataclass(frozen=True)
class RunView:
    """A run's market (``enc``) and answer: ``placed`` row -> site, ``used`` the whole hours
    its placements take per site and (process, month), ``residual`` = free - used."""

    enc: Encoded
    params: RunParams
    placed: dict[int, int]
    used: np.ndarray  # int64 [S, PT]
    residual: np.ndarray  # int64 [S, PT]

    @property
    def cost_weight(self) -> float:
        return self.params.weights.cost


def run_view(
    snapshot: MarketSnapshot, params: RunParams, placements: list[tuple[str, str, str]]
) -> RunView:
    """``placements``: (project id, role, site id) of the run's answer."""
    enc = encode(snapshot, params)
    proj = {p: j for j, p in enumerate(enc.project_ids)}
    site = {s: i for i, s in enumerate(enc.site_ids)}
    placed: dict[int, int] = {}
    for pid, role, sid in placements:
        if pid in proj and sid in site:
            r = int(enc.project_rows[proj[pid], 1 if role == Role.SECOND_SOURCE else 0])
            if r >= 0:
                placed[r] = site[sid]
    used = np.zeros(enc.sites.free.shape, dtype=np.int64)
    for r, s in placed.items():
        sl = slice(enc.rows.ent_ptr[r], enc.rows.ent_ptr[r + 1])
        np.add.at(used[s], enc.rows.ent_off[sl], enc.rows.ent_units[sl])
    residual = enc.sites.free.astype(np.int64) - used
    return RunView(enc, params, placed, used, residual)


def row_rules(view: RunView, r: int) -> tuple[np.ndarray, np.ndarray]:
    """First failed rule at every site (``R_*`` or ``ELIGIBLE``, against the snapshot's free
    capacity) and the cost of every pair that reaches the budget rule (0 elsewhere)."""
    enc = view.enc
    js = np.array([r], dtype=np.int64)
    word = reference.site_table(enc.sites, enc.rows, groups=enc.rows.group[js])
    code, cost = reference._rules(enc.sites, enc.rows, word, js)
    return code[0], cost[0]


def _row_cost_any(view: RunView, r: int, sites: np.ndarray) -> np.ndarray:
    """Price x hours of row ``r`` at ``sites`` whatever the rules say (for near misses)."""
    enc = view.enc
    sl = slice(enc.rows.ent_ptr[r], enc.rows.ent_ptr[r + 1])
    return enc.sites.price[sites][:, enc.rows.ent_off[sl]] @ enc.rows.ent_hours[sl]


@dataclass(frozen=True)
class ValueBreakdown:
    """A placement's value and its parts; the parts sum to ``value`` (``rounding`` is the
    matcher's rounding of the sum to whole points)."""

    value: int
    priority: float
    quality: float
    market: float
    cost: float
    stability: float
    rounding: float

    @property
    def fit(self) -> float:
        return self.quality + self.market


def value_breakdown(view: RunView, r: int, sites: np.ndarray, costs: np.ndarray) -> list:
    """One ValueBreakdown per site of ``sites`` for row ``r`` at ``costs``."""
    from matcher.pricing import value_parts

    sites = np.asarray(sites, dtype=np.int64)
    parts = value_parts(view.enc, view.params, np.full(len(sites), r), sites, costs)
    out = []
    for i in range(len(sites)):
        terms = {name: float(getattr(parts, name)[i]) for name in PART_NAMES}
        value = int(parts.value[i])
        out.append(ValueBreakdown(value=value, **terms, rounding=value - sum(terms.values())))
    return out


@dataclass(frozen=True)
class Shortfall:
    site_id: str
    process: str
    month: str
    short_hours: int


def _shortfalls(view: RunView, r: int, s: int, residual: np.ndarray) -> list[Shortfall]:
    enc = view.enc
    sl = slice(enc.rows.ent_ptr[r], enc.rows.ent_ptr[r + 1])
    off, units = enc.rows.ent_off[sl], enc.rows.ent_units[sl]
    gap = units - residual[s, off]
    return [
        Shortfall(
            enc.site_ids[s],
            str(PROCESSES[int(off[e]) // enc.n_months]),
            enc.month_names[int(off[e]) % enc.n_months],
            int(gap[e]),
        )
        for e in np.flatnonzero(gap > 0)
    ]


def _residual_without(view: RunView, r: int) -> np.ndarray:
    """Residual capacity with row ``r``'s own placement (if any) given back."""
    residual = view.residual.copy()
    s = view.placed.get(r)
    if s is not None:
        enc = view.enc
        sl = slice(enc.rows.ent_ptr[r], enc.rows.ent_ptr[r + 1])
        np.add.at(residual[s], enc.rows.ent_off[sl], enc.rows.ent_units[sl])
    return residual


@dataclass(frozen=True)
class Alternative:
    site_id: str
    cdmo_id: str
    eligible: bool
    value: int
    value_given_up: int  # chosen value - this value (negative: this one is worth more)
    lacks: str  # "" (room, worth less), "capacity", or the rule that excludes it
    detail: str
    breakdown: ValueBreakdown
    shortfalls: list[Shortfall]


@dataclass(frozen=True)
class PlacementWhy:
    project_id: str
    role: str
    share: float
    site_id: str
    cdmo_id: str
    cost: float
    breakdown: ValueBreakdown
    quality: float  # the site's quality score in [0, 1]
    in_target_market: bool
    previous_site: bool
    eligible_sites: int
    rank: int  # 1 = the eligible site of highest value for this source
    alternatives: list[Alternative]
    summary: str


def _compare(chosen: ValueBreakdown, alt: ValueBreakdown) -> str:
    """What the alternative loses (or gains) part by part, largest first."""
    diffs = [(name, getattr(alt, name) - getattr(chosen, name)) for name in PART_NAMES]
    diffs = [(n, d) for n, d in diffs if abs(d) >= 0.5]
    diffs.sort(key=lambda x: x[1])
    return ", ".join(f"{n} {d:+.0f}" for n, d in diffs) or "no part differs by a point"


def why_here(view: RunView, r: int) -> PlacementWhy:
    """Why row ``r`` is at its site: the value in parts, its rank, and the next best sites
    with what each lacks (room once the rest of the answer is served, a rule) or gives up."""
    enc = view.enc
    s = view.placed[r]
    code, cost = row_rules(view, r)
    residual = _residual_without(view, r)
    eligible = np.flatnonzero(code == ELIGIBLE)
    chosen = value_breakdown(view, r, np.array([s]), cost[[s]])[0]
    values = value_breakdown(view, r, eligible, cost[eligible])
    order = sorted(range(len(eligible)), key=lambda i: (-values[i].value, int(eligible[i])))
    rank = 1 + sum(1 for i in order if values[i].value > chosen.value)
    alts: list[Alternative] = []
    for i in order:
        t = int(eligible[i])
        if t == s:
            continue
        if len(alts) == ALTERNATIVES:
            break
        short = _shortfalls(view, r, t, residual)
        given_up = chosen.value - values[i].value
        if short:
            hours = sum(x.short_hours for x in short)
            detail = (
                f"no room once the rest of the answer is served: short by {hours} h in "
                f"{len(short)} process-month(s); worth {values[i].value} points "
                f"({-given_up:+d} against the chosen site)"
            )
            lacks = "capacity"
        elif given_up >= 0:
            detail = f"has room, gives up {given_up} points: {_compare(chosen, values[i])}"
            lacks = ""
        else:
            detail = (
                f"has room and is worth {-given_up} points more: the run's answer is not "
                "optimal for this project (see the run's gap)"
            )
            lacks = ""
        alts.append(
            Alternative(
                enc.site_ids[t],
                enc.cdmo_ids[enc.sites.cdmo[t]],
                True,
                values[i].value,
                given_up,
                lacks,
                detail,
                values[i],
                short,
            )
        )
    # Near misses: sites that pass category/class and processes but fail a later rule, and
    # would be worth more than the chosen site.
    near = np.flatnonzero((code > R_PROCESS) & (code != ELIGIBLE))
    if len(near):
        near_cost = _row_cost_any(view, r, near)
        near_values = value_breakdown(view, r, near, near_cost)
        best = sorted(
            (i for i in range(len(near)) if near_values[i].value > chosen.value),
            key=lambda i: (-near_values[i].value, int(near[i])),
        )[:NEAR_MISSES]
        for i in best:
            t = int(near[i])
            rule = RULES[int(code[t])]
            alts.append(
                Alternative(
                    enc.site_ids[t],
                    enc.cdmo_ids[enc.sites.cdmo[t]],
                    False,
                    near_values[i].value,
                    chosen.value - near_values[i].value,
                    rule,
                    f"would be worth {near_values[i].value - chosen.value} points more but "
                    f"{RULE_SITE_TEXT[rule]}",
                    near_values[i],
                    [],
                )
            )
    in_market = bool(enc.sites.region_bit[s] & enc.rows.tmask[r])
    quality = float(enc.sites.fitq[s] / FIT_QUALITY)
    role = Role.SECOND_SOURCE if enc.row_role[r] == ROLE_SECOND else Role.PRIMARY
    summary = (
        f"{enc.site_ids[s]} is worth {chosen.value} points for this "
        f"{'second source' if role == Role.SECOND_SOURCE else 'project'}: priority "
        f"{chosen.priority:.0f}, fit {chosen.fit:+.0f} (quality score {quality:.2f}"
        f"{', in a target market' if in_market else ', outside its target markets'}), cost "
        f"{chosen.cost:+.0f}, stability {chosen.stability:+.0f}; ranked {rank} of "
        f"{len(eligible)} eligible sites by value"
    )
    if alts:
        summary += f"; next best {alts[0].site_id}: {alts[0].detail}"
    return PlacementWhy(
        project_id=enc.project_ids[enc.row_project[r]],
        role=role.value,
        share=float(enc.row_share[r]),
        site_id=enc.site_ids[s],
        cdmo_id=enc.cdmo_ids[enc.sites.cdmo[s]],
        cost=float(cost[s]),
        breakdown=chosen,
        quality=quality,
        in_target_market=in_market,
        previous_site=bool(enc.rows.prev[r] == s),
        eligible_sites=len(eligible),
        rank=rank,
        alternatives=alts,
        summary=summary,
    )


RULE_SITE_TEXT = {
    "category_or_class": "it does not serve the category and class",
    "process": "it does not run every required process",
    "certification": "it lacks a required certificate valid over the window for the class",
    "market": "it is neither in nor certified for a target market",
    "excluded": "its CDMO is excluded by the maker",
    "budget": "it would exceed the budget",
    "capacity": "it lacks the free capacity for the load even when empty",
}


@dataclass(frozen=True)
class FunnelStep:
    rule: str
    eliminated: int
    remaining: int


@dataclass(frozen=True)
class RequirementCount:
    requirement: str  # a certificate kind or a market
    sites: int  # of the sites reaching that rule, how many meet this requirement


@dataclass(frozen=True)
class CapacityGap:
    process: str
    month: str
    sites_short: int
    short_hours: int  # summed over the sites short


@dataclass(frozen=True)
class UnplacedWhy:
    project_id: str
    role: str
    reason: str  # a BlockReason value: the binding rule
    detail: str
    total_sites: int
    funnel: list[FunnelStep]
    certifications: list[RequirementCount]
    markets: list[RequirementCount]
    capacity_sites: int  # sites passing every rule but capacity
    capacity_gaps: list[CapacityGap]
    shortfalls: list[Shortfall]


def _cert_holders(
    view: RunView, r: int, kind: int, cache: dict[tuple[int, int], np.ndarray] | None = None
) -> np.ndarray:
    """bool [S]: the site holds a certificate of ``kind`` covering the row's class and window
    (the same for every row of its group: ``cache`` keeps it by (group, kind))."""
    enc = view.enc
    st, rows = enc.sites, enc.rows
    g = rows.group[r]
    if cache is not None:
        key = (int(g), kind)
        if key not in cache:
            cache[key] = _cert_holders(view, r, kind)
        return cache[key]
    cls = int(rows.grp_cc[g]) % len(CLASSES)
    ok = (
        (st.cert_kind == kind)
        & (((st.cert_cls.astype(np.int64) >> cls) & 1) == 1)
        & (st.cert_first <= rows.grp_m0[g])
        & (rows.grp_m1[g] <= st.cert_last)
    )
    holds = np.zeros(st.n_sites, dtype=bool)
    cert_site = np.repeat(np.arange(st.n_sites), np.diff(st.cert_ptr))
    holds[cert_site[ok]] = True
    return holds


def _fmt_list(items: list[str]) -> str:
    return ", ".join(items) if items else "nothing"


def why_not(
    view: RunView,
    r: int,
    code: np.ndarray | None = None,
    holders: dict[tuple[int, int], np.ndarray] | None = None,
) -> UnplacedWhy:
    """Why row ``r`` is not placed, with figures: the funnel of sites rule by rule, how many
    hold each required certificate and serve each market, and, where capacity binds, how
    short the sites that pass every other rule are once the run's answer is served."""
    enc = view.enc
    st, rows = enc.sites, enc.rows
    if code is None:
        code = row_rules(view, r)[0]
    n = st.n_sites
    funnel, left = [], n
    for i, rule in enumerate(RULES[:-1]):  # capacity is judged against the residual below
        gone = int(np.count_nonzero(code == i))
        left -= gone
        funnel.append(FunnelStep(rule, gone, left))
    g = rows.group[r]
    cls = CLASSES[int(rows.grp_cc[g]) % len(CLASSES)]
    cat = CATEGORIES[int(rows.grp_cc[g]) // len(CLASSES)]
    window = f"{enc.month_names[rows.grp_m0[g]]}..{enc.month_names[rows.grp_m1[g]]}"
    req = int(rows.req[r])
    # Certificates, among the sites that serve the category and run the processes.
    at_cert = code >= R_CERT
    certs = [
        RequirementCount(
            str(CERT_KINDS[k]),
            int(np.count_nonzero(at_cert & _cert_holders(view, r, k, holders))),
        )
        for k in range(len(CERT_KINDS))
        if (req >> k) & 1
    ]
    # Markets, among the sites that also hold the certificates.
    at_market = code >= R_MARKET
    markets = []
    for reg, kind in MARKET_ACCESS_CERTIFICATE.items():
        bit = 1 << (MKT_SHIFT + REGIONS.index(reg))
        if req & bit:
            inside = (st.region_bit & np.uint32(1 << REGIONS.index(reg))) != 0
            ok = inside | _cert_holders(view, r, CERT_KINDS.index(kind), holders)
            markets.append(RequirementCount(str(reg), int(np.count_nonzero(at_market & ok))))
    # Capacity: the sites passing every rule up to budget, against the run's residual (one
    # matrix per row: passing sites x the row's process-months).
    passing = np.flatnonzero((code == ELIGIBLE) | (code == R_CAPACITY))
    residual = _residual_without(view, r) if r in view.placed else view.residual
    sl = slice(rows.ent_ptr[r], rows.ent_ptr[r + 1])
    off, units = rows.ent_off[sl], rows.ent_units[sl]
    gap = units[None, :] - residual[passing][:, off]
    short = gap > 0
    is_full = short.any(axis=1)
    full = int(np.count_nonzero(is_full))
    short_total = int(gap[short].sum())
    capacity_gaps = sorted(
        (
            CapacityGap(
                str(PROCESSES[int(off[e]) // enc.n_months]),
                enc.month_names[int(off[e]) % enc.n_months],
                int(np.count_nonzero(short[:, e])),
                int(gap[short[:, e], e].sum()),
            )
            for e in np.flatnonzero(short.any(axis=0))
        ),
        key=lambda x: (-x.sites_short, -x.short_hours, x.month, x.process),
    )
    shortfalls = [
        Shortfall(
            enc.site_ids[int(passing[i])],
            str(PROCESSES[int(off[e]) // enc.n_months]),
            enc.month_names[int(off[e]) % enc.n_months],
            int(gap[i, e]),
        )
        for i in np.flatnonzero(is_full)[:SHORTFALL_SITES]
        for e in np.flatnonzero(short[i])[:SHORTFALLS_PER_SITE]
    ]
    role = Role.SECOND_SOURCE if enc.row_role[r] == ROLE_SECOND else Role.PRIMARY
    pid = enc.project_ids[enc.row_project[r]]
    who = f"{len(passing)} of {n} sites"
    if len(passing) == 0:
        last = max((i for i in range(len(RULES) - 1) if funnel[i].eliminated), default=None)
        if last is None:
            reason, detail = BlockReason.NO_ELIGIBLE_SITE, "the market has no sites"
        else:
            rule = RULES[last]
            reason = RULE_REASON[rule]
            before = funnel[last - 1].remaining if last else n
            detail = f"{before} of {n} sites pass the rules before '{rule}'; "
            if rule == "category_or_class":
                detail = f"none of {n} sites serves {cat} class {cls}"
            elif rule == "process":
                procs = [str(PROCESSES[k]) for k in range(N_PROC) if (req >> (PROC_SHIFT + k)) & 1]
                detail += f"none runs every required process ({_fmt_list(procs)}) over {window}"
            elif rule == "certification":
                held = "; ".join(
                    f"{c.sites} hold {c.requirement} for class {cls} over {window}" for c in certs
                )
                detail += f"none holds them all: {held}"
            elif rule == "market":
                served = "; ".join(
                    f"{m.sites} are in or certified for {m.requirement}" for m in markets
                )
                detail += f"none serves every target market: {served}"
            else:
                detail += f"all {before} fail it: {RULE_SITE_TEXT[rule]}"
    elif full == len(passing):
        reason = BlockReason.CAPACITY
        top = capacity_gaps[0]
        holds = " and ".join(f"{c.requirement}" for c in certs)
        serve = " and ".join(f"{m.requirement}" for m in markets)
        what = f"serve {cat} class {cls}"
        if holds:
            what += f", hold {holds} for class {cls} over {window}"
        if serve:
            what += f", are in or certified for {serve}"
        detail = (
            f"{who} {what} and pass every other rule but capacity; all {len(passing)} are "
            f"full once the run's answer is served: {top.sites_short} short in {top.process} "
            f"{top.month} by {top.short_hours} h in total ({short_total} h short over the window)"
        )
    else:
        roomy = passing[~is_full]
        costs = _row_cost_any(view, r, roomy)  # only compared with 0 here
        values = [v.value for v in value_breakdown(view, r, roomy, costs)]
        if max(values) <= 0:
            reason = BlockReason.OUTVALUED
            detail = (
                f"{len(roomy)} eligible sites still have room, but its best placement there is "
                f"worth {max(values)} points: cost outweighs value"
            )
        elif enc.project_rows[enc.row_project[r], 1] >= 0:
            reason = BlockReason.NO_SECOND_SOURCE
            detail = (
                f"{len(roomy)} sites have room for this source, but not together with a site "
                "of a different CDMO for its other source"
            )
        else:
            reason = BlockReason.CAPACITY
            detail = (
                f"{len(roomy)} of {len(passing)} eligible sites still have room (best worth "
                f"{max(values)} points): the solver did not reach it within its time limit"
            )
    return UnplacedWhy(
        project_id=pid,
        role=role.value,
        reason=reason.value,
        detail=detail,
        total_sites=n,
        funnel=funnel,
        certifications=certs,
        markets=markets,
        capacity_sites=len(passing),
        capacity_gaps=capacity_gaps[:12],
        shortfalls=shortfalls,
    )


@dataclass(frozen=True)
class Utilisation:
    """Every listing of the snapshot inside the run's horizon, as arrays sorted by (site id,
    process, month): capacity, reserved (deals and proposals outside the run), whole hours
    used by the run's placements, free after them."""

    site_id: np.ndarray  # str
    process: np.ndarray  # str
    month: np.ndarray  # str "YYYY-MM"
    capacity_hours: np.ndarray  # float64
    reserved_hours: np.ndarray  # float64
    used_hours: np.ndarray  # int64

    @property
    def free_hours(self) -> np.ndarray:
        return self.capacity_hours - self.reserved_hours - self.used_hours


def utilisation(view: RunView, snapshot: MarketSnapshot) -> Utilisation:
    enc = view.enc
    site = {s: i for i, s in enumerate(enc.site_ids)}
    months = {m: i for i, m in enumerate(enc.month_names)}
    proc = {p: i for i, p in enumerate(PROCESSES)}
    ls = [x for x in snapshot.listings if x.month in months]
    n = len(ls)
    l_site = np.fromiter((site[x.site_id] for x in ls), dtype=np.int64, count=n)
    l_off = np.fromiter(
        (proc[x.process] * enc.n_months + months[x.month] for x in ls), dtype=np.int64, count=n
    )
    out = Utilisation(
        site_id=np.array([x.site_id for x in ls], dtype=str),
        process=np.array([str(x.process) for x in ls], dtype=str),
        month=np.array([x.month for x in ls], dtype=str),
        capacity_hours=np.fromiter((x.capacity_hours for x in ls), dtype=np.float64, count=n),
        reserved_hours=np.fromiter((x.reserved_hours for x in ls), dtype=np.float64, count=n),
        used_hours=view.used[l_site, l_off] if n else np.zeros(0, dtype=np.int64),
    )
    order = np.lexsort((out.month, out.process, out.site_id)) if n else np.zeros(0, np.int64)
    return Utilisation(*(getattr(out, f)[order] for f in out.__dataclass_fields__))


@dataclass(frozen=True)
class DemandGroup:
    key: str  # a category, a market, a binding reason, a certificate kind
    projects: int
    hours: float  # the unmet projects' total load


@dataclass(frozen=True)
class MonthGap:
    process: str
    month: str
    projects: int  # unplaced projects whose every passing site is short there
    short_hours: int  # summed over those projects and their sites


@dataclass(frozen=True)
class Bottlenecks:
    unplaced_projects: int
    unmet_hours: float
    by_category: list[DemandGroup]
    by_market: list[DemandGroup]
    by_reason: list[DemandGroup]
    certifications: list[DemandGroup]  # certificates held by no site passing the rules before
    markets: list[DemandGroup]  # target markets no passing site serves
    capacity: list[MonthGap]  # process-months where every passing site is full


def bottlenecks(view: RunView, snapshot: MarketSnapshot) -> Bottlenecks:
    """Unmet demand of the run grouped by category and market, and what binds: per unplaced
    project the binding rule of :func:`why_not` (the missing certificates, the markets no
    site serves, the process-months where every passing site is full), summed."""
    enc = view.enc
    placed_projects = {int(enc.row_project[r]) for r in view.placed}
    unplaced = [j for j in range(len(enc.project_ids)) if j not in placed_projects]
    groups: dict[str, dict[str, list[float]]] = {
        k: {} for k in ("category", "market", "reason", "cert", "mkt")
    }
    gaps: dict[tuple[str, str], list[int]] = {}

    def add(kind: str, key: str, hours: float) -> None:
        entry = groups[kind].setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += hours

    total = 0.0
    holders: dict[tuple[int, int], np.ndarray] = {}
    for lo in range(0, len(unplaced), EXPLAIN_CHUNK):
        chunk = unplaced[lo : lo + EXPLAIN_CHUNK]
        rows = [int(r) for j in chunk for r in enc.project_rows[j] if r >= 0]
        codes = reference.first_failed_rules(enc.sites, enc.rows, np.array(rows))
        code_of = dict(zip(rows, codes, strict=True))
        for j in chunk:
            p = snapshot.projects[j]
            hours = float(sum(sum(ld.monthly_hours) for ld in p.loads))
            total += hours
            add("category", str(p.category), hours)
            for m in p.target_markets:
                add("market", str(m), hours)
            whys = [
                why_not(view, int(r), code_of[int(r)], holders)
                for r in enc.project_rows[j]
                if r >= 0
            ]
            # The binding source: the one with fewer sites passing its rules.
            why = min(whys, key=lambda w: (w.capacity_sites, w.role))
            add("reason", why.reason, hours)
            if why.reason == BlockReason.CERTIFICATION.value:
                for c in why.certifications:
                    if c.sites == min(x.sites for x in why.certifications):
                        add("cert", c.requirement, hours)
            elif why.reason == BlockReason.NO_SITE_IN_MARKET.value:
                for need in why.markets:
                    if need.sites == 0:
                        add("mkt", need.requirement, hours)
            elif why.reason == BlockReason.CAPACITY.value:
                for g in why.capacity_gaps:
                    if g.sites_short == why.capacity_sites:  # every passing site short there
                        entry = gaps.setdefault((g.process, g.month), [0, 0])
                        entry[0] += 1
                        entry[1] += g.short_hours

    def listed(kind: str) -> list[DemandGroup]:
        items = [DemandGroup(k, int(n), h) for k, (n, h) in groups[kind].items()]
        return sorted(items, key=lambda d: (-d.projects, -d.hours, d.key))

    capacity = sorted(
        (MonthGap(p, m, n, h) for (p, m), (n, h) in gaps.items()),
        key=lambda g: (-g.projects, -g.short_hours, g.month, g.process),
    )
    return Bottlenecks(
        unplaced_projects=len(unplaced),
        unmet_hours=total,
        by_category=listed("category"),
        by_market=listed("market"),
        by_reason=listed("reason"),
        certifications=listed("cert"),
        markets=listed("mkt"),
        capacity=capacity,
    )
