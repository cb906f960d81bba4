"""Instant candidates: one project's best sites against the current market, in milliseconds.

The batch's own machinery, for one project: ``encode`` (the project's rows, laid over a site
table that is encoded once per market version) and the kernels' ``score_pairs`` (eligibility,
value, cost and the top-K). Nothing here restates a rule or the value formula:

* candidates are the kernels' candidate list of the project's rows (the top ``limit``);
* near misses are sites that fail exactly ONE rule: the project's rows are scored again with
  that one rule lifted (certificates, markets, exclusions, budget or capacity not required),
  and the sites that become eligible are the near misses of that rule. Category/class and
  process are not lifted: a site that does not make this kind of device or run the process
  is not near;
* the value is broken into its terms by ``matcher.pricing.value_parts`` (the one NumPy twin
  of the kernels' formula);
* a second-source project has two rows (primary and second source, each with its share of
  the loads), scored separately; the two sources must be at two different CDMOs, which is
  checked on the complete eligible sets.

``SiteSide`` is the per-market-version cache: the site table, site names, and the site
arrays of the last few horizons (a horizon = a project window), so a request pays for its own
rows and one kernel call, never for re-encoding the market.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace

import numba
import numpy as np

from matcher import kernels
from matcher.encode import (
    CERT_KINDS,
    FIT_MARKET,
    FIT_QUALITY,
    MAX_HORIZON_MONTHS,
    PROCESSES,
    REGIONS,
    Encoded,
    SiteTable,
    encode,
    encode_sites,
)
from matcher.kernels import CERT_FIELD, ELIGIBLE, MKT_FIELD, MKT_SHIFT, RULES, SiteArrays
from matcher.pricing import value_parts
from schemas.api.candidates import (
    Blocker,
    CandidateRule,
    CandidatesPublic,
    NearMiss,
    ProcessCapacity,
    RuleCounts,
    SiteCandidate,
    SourceCandidates,
    ValueParts,
)
from schemas.market import (
    MARKET_ACCESS_CERTIFICATE,
    MarketSnapshot,
    ProcessLoad,
    Project,
    Role,
    RunParams,
    month_index,
    month_name,
)

__all__ = ["HORIZONS_KEPT", "SiteSide", "instant_candidates", "warm_up"]

# Site arrays of this many horizons are kept per market version (each is sites x processes x
# window months of free hours and prices: 15 MB at 10000 sites x 12 months).
HORIZONS_KEPT = 8
WORDS_KEPT = 256  # group words kept per market version (a few sites x 4 bytes each)
# Rules lifted one at a time to find near misses, in the kernels' test order.
LIFTABLE = (
    kernels.R_CERT,
    kernels.R_MARKET,
    kernels.R_EXCLUDED,
    kernels.R_BUDGET,
    kernels.R_CAPACITY,
)
SHORT_MONTHS_SHOWN = 3

_KERNEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class _HorizonTable(SiteTable):
    """A SiteTable that keeps the arrays of its last ``HORIZONS_KEPT`` horizons (``over``
    results are read-only for everyone: the kernels never write their inputs)."""

    horizons: OrderedDict[tuple[int, int], SiteArrays] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    group_words: OrderedDict[tuple, kernels.GroupWords] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def over(self, h0: int, months: int) -> SiteArrays:
        horizons = self.horizons
        with self.lock:
            arrays = horizons.get((h0, months))
            if arrays is None:
                arrays = super().over(h0, months)
                horizons[(h0, months)] = arrays
                while len(horizons) > HORIZONS_KEPT:
                    horizons.popitem(last=False)
            else:
                horizons.move_to_end((h0, months))
            return arrays

    def words(self, h0: int, months: int, rows: kernels.RowArrays) -> kernels.GroupWords:
        """``kernels.group_words`` over horizon (h0, months), kept for the last ``WORDS_KEPT``
        (horizon, groups): the sites serving a category and class, and their certificates
        over a window, are the same for every project of that kind and window."""
        key = (h0, months, rows.grp_cc.tobytes(), rows.grp_m0.tobytes(), rows.grp_m1.tobytes())
        with self.lock:
            words = self.group_words.get(key)
            if words is None:
                words = kernels.group_words(self.over(h0, months), rows)
                self.group_words[key] = words
                while len(self.group_words) > WORDS_KEPT:
                    self.group_words.popitem(last=False)
            else:
                self.group_words.move_to_end(key)
            return words


@dataclass(frozen=True)
class SiteSide:
    """The supply side of one market version, encoded once (``from_snapshot``) and shared
    by every request at that version (thread-safe)."""

    version: int
    table: _HorizonTable
    site_names: list[str]

    @classmethod
    def from_snapshot(cls, snapshot: MarketSnapshot) -> SiteSide:
        """Encode ``snapshot``'s sites and listings (its projects are not read)."""
        table = encode_sites(snapshot)
        cached = _HorizonTable(**{f.name: getattr(table, f.name) for f in fields(table)})
        return cls(
            version=snapshot.version,
            table=cached,
            site_names=[s.name for s in snapshot.sites],
        )

    @property
    def n_sites(self) -> int:
        return self.table.n_sites


@contextmanager
def _one_kernel_thread() -> Iterator[None]:
    """One kernel call at a time, on one thread: one project is one or two rows, one group,
    one parallel task, so waking the thread pool only costs (a lot on a loaded machine).
    Parallel kernels from several request threads at once are also only safe on some Numba
    threading layers (not "workqueue")."""
    with _KERNEL_LOCK:
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(threads)


def warm_up() -> float:
    """Compile (or load) the kernels: call before serving, so no request pays JIT time."""
    return kernels.warm_up()


def instant_candidates(
    side: SiteSide,
    project: Project,
    *,
    limit: int = 10,
    params: RunParams | None = None,
    project_id: str | None = None,
) -> CandidatesPublic:
    """The best ``limit`` eligible sites of each of ``project``'s sources (by the batch's
    value), the best ``limit`` near misses (sites failing exactly one rule) and, when nothing
    is eligible, the rules that block it."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    params = params or RunParams()
    enc, rows = _encode(side, project, params)
    n_rows = rows.n_rows
    # One kernel call: the project's rows keep every eligible site (k = all sites), and each
    # lifted-rule copy its sites too.
    with _one_kernel_thread():
        words = side.table.words(enc.horizon_start, enc.n_months, rows)
        scored = kernels.score_pairs(
            enc.sites,
            _with_lifted_rules(rows),
            words,
            k=max(1, side.n_sites),
            w_cost=params.weights.cost,
            fit_market=FIT_MARKET,
        )
    counts = scored.counts[:n_rows]
    n_elig = counts[:, ELIGIBLE]

    sources = []
    eligible_sets: list[np.ndarray] = []
    for r in range(n_rows):
        lo, hi = scored.cand_ptr[r], min(scored.cand_ptr[r + 1], scored.cand_ptr[r] + limit)
        eligible = scored.cand_site[scored.cand_ptr[r] : scored.cand_ptr[r + 1]]
        eligible_sets.append(eligible)
        candidates = [c for _, c in _describe(side, enc, params, r, scored, np.arange(lo, hi))]
        # Near misses: sites eligible with one rule lifted that are not eligible as they are.
        found, rules = [], []
        for i, rule in enumerate(LIFTABLE):
            lifted = n_rows + r * len(LIFTABLE) + i
            lo, hi = scored.cand_ptr[lifted], scored.cand_ptr[lifted + 1]
            new = lo + np.flatnonzero(~np.isin(scored.cand_site[lo:hi], eligible))[:limit]
            found.append(new)
            rules.append(np.full(len(new), rule))
        at, rule_of = np.concatenate(found), np.concatenate(rules)
        best = np.lexsort((scored.cand_site[at], -scored.cand_value[at]))[:limit]
        near_misses = [
            NearMiss.model_construct(
                **dict(c),
                rule=CandidateRule(RULES[rule]),
                detail=_detail(enc, words, r, rule, s, c),
            )
            for (s, c), rule in zip(
                _describe(side, enc, params, r, scored, at[best]),
                rule_of[best].tolist(),
                strict=True,
            )
        ]
        sources.append(
            SourceCandidates(
                role=Role.SECOND_SOURCE if enc.row_role[r] else Role.PRIMARY,
                share=float(enc.row_share[r]),
                counts=RuleCounts(
                    **{name: int(counts[r, i]) for i, name in enumerate(RULES)},
                    eligible=int(n_elig[r]),
                ),
                candidates=candidates,
                near_misses=near_misses,
            )
        )
    blockers = [_no_site(enc, r, counts[r]) for r in range(n_rows) if n_elig[r] == 0]
    if n_rows == 2 and not blockers:
        blocker = _separation(side, eligible_sets)
        if blocker is not None:
            blockers.append(blocker)
    return CandidatesPublic(
        market_version=side.version,
        project_id=project_id,
        window_start=project.window_start,
        window_end=project.window_end,
        placeable=not blockers,
        sources=sources,
        blockers=blockers,
    )


# The anchor's other fields at their defaults, resolved once (as ``model_construct`` would).
_ANCHOR_DEFAULTS = {
    name: Project.model_fields[name].get_default(call_default_factory=True)
    for name in ("title", "stage", "second_source_separation", "confidential")
}


def _encode(
    side: SiteSide, project: Project, params: RunParams
) -> tuple[Encoded, kernels.RowArrays]:
    """``project``'s rows, encoded by the batch's ``encode`` over the horizon of the listings
    (widened to the project's window if it runs past them), so that one set of site arrays
    serves every project at this market version. The horizon is set by an anchor: a project
    with no load spanning the listings, encoded last and then dropped (its row and group)."""
    table = side.table
    projects = [project]
    lo = min(table.h0, month_index(project.window_start))
    hi = max(table.h0 + table.months - 1, month_index(project.window_end))
    if table.months and hi - lo + 1 <= MAX_HORIZON_MONTHS:
        # A copy of the project with its differences set (``model_copy``: no per-request
        # default resolution, which ``model_construct`` pays for every omitted field).
        projects.append(
            project.model_copy(
                update={
                    "id": "~horizon",
                    "maker_id": "~",
                    "required_certifications": [],
                    "loads": [
                        ProcessLoad.model_construct(
                            process=project.loads[0].process, monthly_hours=[0.0] * table.months
                        )
                    ],
                    "window_start": month_name(table.h0),
                    "window_end": month_name(table.h0 + table.months - 1),
                    "priority": 1,
                    "budget_ceiling": None,
                    "excluded_cdmo_ids": [],
                    "second_source_required": False,
                    "second_source_share": 0.3,
                    **_ANCHOR_DEFAULTS,
                }
            )
        )
    snapshot = MarketSnapshot.model_construct(
        version=side.version,
        as_of=None,
        sites=[],  # the site side is `side`
        listings=[],
        projects=projects,
        previous=[],
        pinned=[],
        forbidden=[],  # every field given: no per-request default resolution
    )
    enc = encode(snapshot, params, table)
    # The project comes first: its rows are 0 (and 1), its group is 0.
    mine = kernels.take_rows(enc.rows, np.flatnonzero(enc.row_project == 0))
    rows = replace(mine, grp_cc=mine.grp_cc[:1], grp_m0=mine.grp_m0[:1], grp_m1=mine.grp_m1[:1])
    return enc, rows


def _with_lifted_rules(rows: kernels.RowArrays) -> kernels.RowArrays:
    """``rows``, then for each row one copy per rule of ``LIFTABLE`` with that rule lifted."""
    n = rows.n_rows
    idx = np.concatenate([np.arange(n), np.repeat(np.arange(n), len(LIFTABLE))])
    out = kernels.take_rows(rows, idx)  # fresh arrays: safe to edit
    out.force[n:] = -1
    out.alt[n:] = False
    for t in range(n, len(idx)):
        rule = LIFTABLE[(t - n) % len(LIFTABLE)]
        if rule == kernels.R_CERT:
            out.req[t] &= np.uint32(~CERT_FIELD & 0xFFFFFFFF)
        elif rule == kernels.R_MARKET:
            out.req[t] &= np.uint32(~MKT_FIELD & 0xFFFFFFFF)
        elif rule == kernels.R_EXCLUDED:
            out.excl[out.excl_ptr[t] : out.excl_ptr[t + 1]] = -1  # no CDMO has index -1
        elif rule == kernels.R_BUDGET:
            out.budget[t] = np.inf
        else:
            out.ent_units[out.ent_ptr[t] : out.ent_ptr[t + 1]] = 0
    return out


def _describe(
    side: SiteSide,
    enc: Encoded,
    params: RunParams,
    r: int,
    scored: kernels.Scored,
    at: np.ndarray,
) -> list[tuple[int, SiteCandidate]]:
    """Row ``r``'s placement at the sites of ``scored``'s candidates ``at``: (site, details)."""
    if not len(at):
        return []
    sites, values, costs = scored.cand_site[at], scored.cand_value[at], scored.cand_cost[at]
    table, st, rows = side.table, enc.sites, enc.rows
    parts = value_parts(enc, params, np.full(len(sites), r), sites, costs)
    e0, e1 = rows.ent_ptr[r], rows.ent_ptr[r + 1]
    off, units = rows.ent_off[e0:e1], rows.ent_units[e0:e1]
    months = enc.n_months
    m0, m1 = int(rows.grp_m0[rows.group[r]]), int(rows.grp_m1[rows.group[r]])
    entry_month = [enc.month_names[int(o) % months] for o in off]
    free = st.free[sites]  # [n, processes x months]
    short = np.maximum(units[None, :] - free[:, off], 0)  # [n, entries]
    # Built without validation (model_construct): every value comes from validated data.
    by_process = []  # per process: (kind, entries, needed, free over the window per site)
    for p in sorted({int(o) // months for o in off}):
        mine = np.flatnonzero(off // months == p)
        window = free[:, p * months + m0 : p * months + m1 + 1].sum(axis=1)
        by_process.append((PROCESSES[p], mine, float(units[mine].sum()), window))
    in_market = (st.region_bit[sites] & rows.tmask[r]) != 0
    out = []
    for i, s in enumerate(sites.tolist()):
        capacity = [
            ProcessCapacity.model_construct(
                process=kind,
                needed_hours=needed,
                free_hours=float(window[i]),
                short_hours=float(short[i, mine].sum()),
                short_months=[entry_month[e] for e in mine if short[i, e] > 0],
            )
            for kind, mine, needed, window in by_process
        ]
        fitq = float(st.fitq[s])
        candidate = SiteCandidate.model_construct(
            site_id=table.site_ids[s],
            cdmo_id=table.cdmo_ids[table.cdmo[s]],
            site_name=side.site_names[s],
            region=REGIONS[int(table.region[s])],
            value=int(values[i]),
            value_parts=ValueParts.model_construct(
                priority=float(parts.priority[i]),
                quality=float(parts.quality[i]),
                market=float(parts.market[i]),
                cost=float(parts.cost[i]),
                stability=float(parts.stability[i]),
            ),
            cost=float(costs[i]),
            fit=fitq + (FIT_MARKET if in_market[i] else 0.0),
            quality=fitq / FIT_QUALITY,
            in_target_market=bool(in_market[i]),
            capacity=capacity,
            capacity_suffices=not short[i].any(),
        )
        out.append((s, candidate))
    return out


def _site_word(enc: Encoded, words: kernels.GroupWords, r: int, site: int) -> int:
    """The site's word for row ``r``'s group (certificates valid over its window, markets)."""
    g = int(enc.rows.group[r])
    lo, hi = words.ptr[g], words.ptr[g + 1]
    at = lo + int(np.searchsorted(words.site[lo:hi], site))
    return int(words.word[at])


def _detail(
    enc: Encoded, words: kernels.GroupWords, r: int, rule: int, s: int, c: SiteCandidate
) -> str:
    """Why site ``s`` fails ``rule`` for row ``r`` (the one rule it fails)."""
    rows = enc.rows
    g = rows.group[r]
    window = f"{enc.month_names[rows.grp_m0[g]]} to {enc.month_names[rows.grp_m1[g]]}"
    if rule == kernels.R_CERT:
        lacking = int(rows.req[r]) & CERT_FIELD & ~_site_word(enc, words, r, s)
        names = [CERT_KINDS[i].value for i in range(len(CERT_KINDS)) if lacking >> i & 1]
        return f"lacks {', '.join(names)} valid from {window} for the project's class"
    if rule == kernels.R_MARKET:
        lacking = int(rows.req[r]) & MKT_FIELD & ~_site_word(enc, words, r, s)
        names = [
            f"{REGIONS[i].value} (needs {MARKET_ACCESS_CERTIFICATE[REGIONS[i]].value})"
            for i in range(len(REGIONS))
            if lacking >> (MKT_SHIFT + i) & 1
        ]
        return (
            f"in {c.region.value}, outside target market(s) {', '.join(names)} and without "
            "their market-access certificate valid over the window"
        )
    if rule == kernels.R_EXCLUDED:
        return f"its CDMO {c.cdmo_id} is on the project's excluded list"
    if rule == kernels.R_BUDGET:
        return f"cost {c.cost:,.2f} is over the budget {float(rows.budget[r]):,.2f}"
    short = [(p.process.value, m) for p in c.capacity for m in p.short_months]
    total = sum(p.short_hours for p in c.capacity)
    shown = ", ".join(f"{proc} {m}" for proc, m in short[:SHORT_MONTHS_SHOWN])
    more = f" and {len(short) - SHORT_MONTHS_SHOWN} more" if len(short) > SHORT_MONTHS_SHOWN else ""
    return f"short of free capacity by {total:,.0f} h in total ({shown}{more})"


def _role(enc: Encoded, r: int) -> str:
    if enc.rows.n_rows == 1:
        return "the project"
    return "the second source" if enc.row_role[r] else "the primary source"


def _no_site(enc: Encoded, r: int, counts: np.ndarray) -> Blocker:
    """No site passes every rule: the last rule that set sites aside eliminated the last."""
    n = int(counts[:ELIGIBLE].sum())
    if n == 0:
        return Blocker(rule=CandidateRule.CATEGORY_OR_CLASS, detail="the market has no sites")
    last = max(i for i in range(ELIGIBLE) if counts[i])
    return Blocker(
        rule=CandidateRule(RULES[last]),
        detail=f"no site can take {_role(enc, r)}: the last {int(counts[last])} of {n} sites "
        f"fail the {RULES[last]} rule",
    )


def _separation(side: SiteSide, eligible: list[np.ndarray]) -> Blocker | None:
    """The two sources need two different CDMOs: is there an eligible pair that has them?"""
    cdmo = side.table.cdmo
    first, second = set(cdmo[eligible[0]].tolist()), set(cdmo[eligible[1]].tolist())
    if len(first | second) > 1:
        return None
    only = side.table.cdmo_ids[first.pop()]
    return Blocker(
        rule=CandidateRule.SECOND_SOURCE_SEPARATION,
        detail=f"every site eligible for either source belongs to CDMO {only}; the two sources "
        "must be at two different CDMOs",
    )
