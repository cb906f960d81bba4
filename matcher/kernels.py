"""Numba kernels: eligibility, score and a bounded candidate list for every row x site pair.

A *row* is one item to place: a project, or one source (primary / second) of a project that
needs two. Everything here works on contiguous arrays built by ``matcher.problem``; the
``matcher.reference`` module holds plain NumPy twins that the tests hold these kernels to,
bit for bit.

Bit-packed words (``uint32``):

* site word, per row group ``g`` = (category x class, first month, last month) and site:
  bits 0-9 certificate kinds held with a scope covering the class and valid over the whole
  window; bits 10-14 markets the site may supply (its own region, plus each market whose
  market-access certificate is among those bits); bits 16-25 processes the site runs and lists;
* ``row_req[j]``: the same fields, holding what row ``j`` needs;
* ``site_cc[s]``: bit ``category * N_CLASSES + class`` for each category and class served.

A pair is eligible when it passes, in this order (the first rule failed is the one counted):
category/class, process, certification, market, excluded CDMO, budget, capacity of the site
alone. Category/class is answered by an index: each group only lists the sites serving its
category and class, with their site words gathered contiguously, so a row scans those alone.

Two kernels give the same bits (``score_pairs`` picks by size, ``LANES_MIN_PAIRS``):

* the *walk* (small calls): per row, a branch-free pass of mask tests over the list, then for
  each survivor the row's (process, month) loads one after the other (cost and capacity),
  the remaining rules, the value and the top-K;
* the *lanes* (large calls): each list's sites laid out as columns (``Lanes``), sorted so that
  sites passing the same requirements sit together; a row computes cost and capacity for
  runs of sites at once, load by load (the walk's additions in the walk's order, vectorised),
  only in the blocks that hold a survivor of its masks, and its top-K looks only at the blocks
  whose best value can enter it (see ``_score_task``).

Value (maximised, int64 points)::

    x = a + b * fit - w_cost * cost  (+ stab when the site is the row's previous proposal)
    value = floor(clip(x, -VALUE_CLIP, VALUE_CLIP) + 0.5)

with ``fit = site_fitq[s] + (fit_market if the site's region is a target market else 0)``;
``a``, ``b``, ``stab`` per row and ``site_fitq`` are set by ``matcher.problem``, which owns
the formula. Ties in value rank the lower site index first, everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from llvmlite import ir
from numba import njit, parallel_chunksize, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from matcher.control import Stopped

N_CLASSES = 3
# Field layout of the site / requirement words.
CERT_SHIFT = 0
MKT_SHIFT = 10
PROC_SHIFT = 16
CERT_FIELD = 0x3FF << CERT_SHIFT
MKT_FIELD = 0x1F << MKT_SHIFT
PROC_FIELD = 0x3FF << PROC_SHIFT

# Rejection counters, in the order the rules are tested; column ELIGIBLE counts the rest.
RULES = (
    "category_or_class",
    "process",
    "certification",
    "market",
    "excluded",
    "budget",
    "capacity",
)
R_CATEGORY, R_PROCESS, R_CERT, R_MARKET, R_EXCLUDED, R_BUDGET, R_CAPACITY = range(7)
ELIGIBLE = len(RULES)
N_COUNTS = ELIGIBLE + 1

# "No such value": also AssignmentModel's default for outside_best.
NO_VALUE = np.iinfo(np.int64).min // 4
# Values are clipped so that sums over a million items stay far from int64 overflow.
VALUE_CLIP = 1e12
# Slots beyond the top-K: two forced sites (pinned, previous) and one alternative-CDMO site.
EXTRA_SLOTS = 3
# Rows per parallel task, all of one group (small enough to balance the threads, big enough
# to amortise the task's scratch arrays), and tasks a thread takes at a time (dynamic
# scheduling).
ROWS_PER_TASK = 32
TASKS_PER_GRAB = 1
# Rows per call of the scoring kernel when a stop check is given: a cancel is seen between
# calls (about 0.05 s of work each at 100000 x 10000 on 2 cores; the calls' own overhead
# is microseconds).
ROWS_PER_CHECK = 4096
# Calls with fewer pairs (rows x sites) than this take the pair-by-pair walk: the lane
# layout costs a few milliseconds of set-up (3 ms of a 7 ms instant-candidates request at
# 10000 sites) that few rows never repay; at 20000 x 2000 both take the same time, at
# 100000 x 10000 the lanes take a third of the walk's.
LANES_MIN_PAIRS = 50_000_000
# Rows per parallel task of the walk, and its tasks per grab.
WALK_ROWS_PER_TASK = 16
WALK_TASKS_PER_GRAB = 4


@dataclass(frozen=True)
class SiteArrays:
    """Supply side, one entry per site (``PT`` = processes x horizon months)."""

    cc: np.ndarray  # uint32 [S] category x class bits
    cdmo: np.ndarray  # int32 [S]
    region_bit: np.ndarray  # uint32 [S] 1 << region
    word0: np.ndarray  # uint32 [S] process bits | own-region market bit
    fitq: np.ndarray  # float64 [S] quality part of fit
    free: np.ndarray  # int32 [S, PT] whole free hours (rounded down; <= 1e7 by schema)
    price: np.ndarray  # float64 [S, PT] price per hour (0 where no listing)
    cert_ptr: np.ndarray  # int64 [S + 1]
    cert_kind: np.ndarray  # int32 [n_cert]
    cert_cls: np.ndarray  # uint32 [n_cert] bit per device class in scope
    cert_first: np.ndarray  # int32 [n_cert] first horizon month a window may start in
    cert_last: np.ndarray  # int32 [n_cert] last horizon month a window may end in
    access_region: np.ndarray  # int32 [n_kinds] region a certificate kind opens, or -1

    @property
    def n_sites(self) -> int:
        return len(self.cc)


@dataclass(frozen=True)
class RowArrays:
    """Demand side, one entry per row (an item of the assignment model)."""

    group: np.ndarray  # int32 [N] index into grp_*
    req: np.ndarray  # uint32 [N] required cert | market | process bits
    tmask: np.ndarray  # uint32 [N] target-market region bits (for fit)
    excl_ptr: np.ndarray  # int64 [N + 1]
    excl: np.ndarray  # int32 excluded CDMO indices
    ent_ptr: np.ndarray  # int64 [N + 1]
    ent_off: np.ndarray  # int32 process * months + month
    ent_units: np.ndarray  # int64 whole hours (rounded up)
    ent_hours: np.ndarray  # float64 hours (for cost)
    budget: np.ndarray  # float64 [N], inf when none
    a: np.ndarray  # float64 [N]
    b: np.ndarray  # float64 [N]
    stab: np.ndarray  # float64 [N]
    prev: np.ndarray  # int32 [N] previous site or -1
    force: np.ndarray  # int32 [N, 2] sites always kept when eligible, or -1
    alt: np.ndarray  # bool [N] also keep the best site of a second CDMO
    grp_cc: np.ndarray  # int32 [G] category * N_CLASSES + class
    grp_m0: np.ndarray  # int32 [G] first window month (horizon-relative)
    grp_m1: np.ndarray  # int32 [G] last window month

    @property
    def n_rows(self) -> int:
        return len(self.group)


@dataclass(frozen=True)
class GroupWords:
    """Per group, the sites serving its category and class and their site words."""

    ptr: np.ndarray  # int64 [G + 1]
    site: np.ndarray  # int32, ascending within a group
    word: np.ndarray  # uint32


@dataclass(frozen=True)
class Scored:
    """Candidates in CSR form, sorted per row by (value desc, site asc)."""

    cand_ptr: np.ndarray  # int64 [N + 1]
    cand_site: np.ndarray  # int32 [n_cand]
    cand_value: np.ndarray  # int64 [n_cand]
    cand_cost: np.ndarray  # float64 [n_cand]
    counts: np.ndarray  # int64 [N, N_COUNTS] rejections per rule, then eligible
    outside_best: np.ndarray  # int64 [N] best eligible value not kept, or NO_VALUE


# --------------------------------------------------------------------------- group words


def cc_lists(site_cc: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sites serving each category x class bit, ascending: CSR ``(ptr, sites)``."""
    lists = [np.flatnonzero((site_cc >> np.uint32(c)) & np.uint32(1)) for c in range(n_bits)]
    ptr = np.zeros(n_bits + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=ptr[1:])
    sites = np.concatenate(lists).astype(np.int32) if lists else np.zeros(0, np.int32)
    return ptr, sites


@njit(cache=True, parallel=True)
def _group_words_kernel(
    grp_cc, grp_m0, grp_m1, gptr, cc_ptr, cc_site, word0, cert_ptr, cert_kind, cert_cls,
    cert_first, cert_last, access_region, out_site, out_word,
):  # fmt: skip
    for g in prange(grp_cc.shape[0]):
        c = grp_cc[g]
        cls = c % N_CLASSES
        m0 = grp_m0[g]
        m1 = grp_m1[g]
        base = gptr[g]
        l0 = cc_ptr[c]
        for i in range(gptr[g + 1] - base):
            s = cc_site[l0 + i]
            certs = np.int64(0)
            for q in range(cert_ptr[s], cert_ptr[s + 1]):
                if (
                    (np.int64(cert_cls[q]) >> cls) & 1
                    and cert_first[q] <= m0
                    and m1 <= cert_last[q]
                ):
                    certs |= np.int64(1) << cert_kind[q]
            w = np.int64(word0[s]) | (certs << CERT_SHIFT)
            for kind in range(access_region.shape[0]):
                if (certs >> kind) & 1 and access_region[kind] >= 0:
                    w |= np.int64(1) << (MKT_SHIFT + access_region[kind])
            out_site[base + i] = s
            out_word[base + i] = w


def group_words(sites: SiteArrays, rows: RowArrays) -> GroupWords:
    """Site words of every group, for the sites that serve the group's category and class."""
    n_bits = int(rows.grp_cc.max()) + 1 if len(rows.grp_cc) else 0
    cc_ptr, cc_site = cc_lists(sites.cc, n_bits)
    lengths = np.diff(cc_ptr)[rows.grp_cc] if n_bits else np.zeros(0, np.int64)
    gptr = np.zeros(len(rows.grp_cc) + 1, dtype=np.int64)
    np.cumsum(lengths, out=gptr[1:])
    out_site = np.empty(int(gptr[-1]), dtype=np.int32)
    out_word = np.empty(int(gptr[-1]), dtype=np.uint32)
    if len(out_site):
        _group_words_kernel(
            rows.grp_cc, rows.grp_m0, rows.grp_m1, gptr, cc_ptr, cc_site, sites.word0,
            sites.cert_ptr, sites.cert_kind, sites.cert_cls, sites.cert_first, sites.cert_last,
            sites.access_region, out_site, out_word,
        )  # fmt: skip
    return GroupWords(gptr, out_site, out_word)


# --------------------------------------------------------------------------- lanes
#
# The scoring kernel works on *lanes*: the sites of one category x class list, in an order
# of the kernel's choosing, with their data laid out column by column (``Lanes``). A row
# reads its group's list as contiguous lanes, and every per-pair quantity (mask tests, cost,
# capacity, value) is computed for a run of lanes at once, entry by entry, with the same
# floating-point operations in the same order as a pair-by-pair walk: the results are the
# same bits, and the loops vectorise. Lanes are sorted so that sites passing the same
# requirements sit together (see ``lanes``); a row then walks only the blocks of BLOCK lanes
# that hold a survivor of its mask tests.

# Lanes per block, a multiple of 8 (block activity is read as uint64 words): smaller blocks
# skip more lanes but cut runs shorter. At 100000 x 10000 the runs cover 41 % of the lanes
# with 16 (7.1 runs a row), 49 % with 32 (4.4 runs): 16 takes 0.96-0.98x the CPU of 32 now
# that a row's runs are one call per group of loads (the same CPU before); 8 is slower.
BLOCK = 16
WORDS_PER_BLOCK = BLOCK // 8
# Inactive blocks (no survivor) that a run of lanes bridges: their lanes cost a few vector
# operations per load, a new run a call and a loop's set-up per load; their flags are 0, so
# they change no count and no value.
RUN_GAP = 1
I32_MIN = np.iinfo(np.int32).min
I32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class Lanes:
    """The sites of each category x class list used by the rows, as padded lanes.

    Lane ``q`` of list ``c`` is ``site[q]`` (-1 for padding, whose data is zero); group ``g``
    reads lanes ``q0[g]`` to ``q0[g] + len(list)`` of the columns (one per (process, month)
    cell that some row loads: a project's request builds a dozen, not all) and its own site words
    in the same order at ``word[w0[g]:]``. ``lane_of[q0[g] + p]`` is the lane of the site at
    position ``p`` of the group's ascending list in ``GroupWords``.
    """

    q0: np.ndarray  # int64 [G] first lane of the group's list (0 for groups no row uses)
    w0: np.ndarray  # int64 [G] first permuted site word of the group
    lane_of: np.ndarray  # int64 [n_lanes]
    site: np.ndarray  # int32 [n_lanes]
    ent_col: np.ndarray  # int32 per row entry: its column (the cells the rows load only)
    cells: np.ndarray  # int64 [columns] the (process, month) cell of each column
    price: np.ndarray  # float64 [columns, n_lanes]
    free: np.ndarray  # int32 [columns, n_lanes]
    dual: np.ndarray  # float64 [columns, n_lanes], or [0, n_lanes] without dual prices
    # (``lanes`` builds the layout without them, once per market: ``with_dual`` adds them)
    cdmo: np.ndarray  # int32 [n_lanes]
    fitq: np.ndarray  # float64 [n_lanes]
    region_bit: np.ndarray  # uint32 [n_lanes]
    word: np.ndarray  # uint32, site words of every used group, padded to whole blocks
    order: np.ndarray  # int64 [rows] the rows by group, then requirements (the pass's order:
    # a serial sort of 11 ms at 100000 rows, paid once per market here, not in every pass)


@njit(cache=True, parallel=True)
def _lane_columns(
    lane_site, cells, price, free, site_cdmo, site_fitq, site_rbit,
    l_price, l_free, l_cdmo, l_fitq, l_rbit,
):  # fmt: skip
    n_lanes = lane_site.shape[0]
    n_pt = cells.shape[0]
    for blk in prange((n_lanes + 255) // 256):
        for q in range(blk * 256, min(n_lanes, blk * 256 + 256)):
            s = lane_site[q]
            if s < 0:  # padding: never a survivor, data zero
                l_cdmo[q] = -1
                l_fitq[q] = 0.0
                l_rbit[q] = 0
                for o in range(n_pt):
                    l_price[o, q] = 0.0
                    l_free[o, q] = 0
                continue
            l_cdmo[q] = site_cdmo[s]
            l_fitq[q] = site_fitq[s]
            l_rbit[q] = site_rbit[s]
            for o in range(n_pt):
                l_price[o, q] = price[s, cells[o]]
                l_free[o, q] = free[s, cells[o]]


@njit(cache=True, parallel=True)
def _lane_dual(lane_site, cells, dual, l_dual):
    n_lanes = lane_site.shape[0]
    for blk in prange((n_lanes + 255) // 256):
        for q in range(blk * 256, min(n_lanes, blk * 256 + 256)):
            s = lane_site[q]
            for o in range(cells.shape[0]):
                l_dual[o, q] = dual[s, cells[o]] if s >= 0 else 0.0


@njit(cache=True, parallel=True)
def _lane_words(groups, gptr, gword, q0, w0, lane_perm, out_word):
    for t in prange(groups.shape[0]):
        g = groups[t]
        base = gptr[g]
        for lane in range(gptr[g + 1] - base):
            out_word[w0[g] + lane] = gword[base + lane_perm[q0[g] + lane]]


@njit(cache=True)
def _and_words(groups, gptr, gword, out):
    """Bitwise AND of the site words of ``groups`` (all of one list), lane by lane."""
    out[:] = 0xFFFFFFFF
    for g in groups:
        base = gptr[g]
        for i in range(out.shape[0]):
            out[i] &= gword[base + i]


def _sort_key(word: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Lane order key: the word's bits reordered by how many rows require each (most first),
    read as a reflected Gray code, so that sites with the same capabilities sit together and
    neighbouring capability sets stay adjacent. Any order gives the same results."""
    bits = np.argsort(-freq, kind="stable")
    key = np.zeros(len(word), dtype=np.int64)
    w = word.astype(np.int64)
    for rank, bit in enumerate(bits):
        key |= ((w >> int(bit)) & 1) << (31 - rank)
    shift = 1
    while shift < 32:
        key ^= key >> shift
        shift <<= 1
    return np.argsort(-key, kind="stable")


def lanes(sites: SiteArrays, rows: RowArrays, words: GroupWords) -> Lanes:
    """Lane layout of the lists the rows use (one per category x class), without dual prices.

    It depends on the market only (not on a pass's prices), so a market's passes share one
    (``matcher.encode.Encoded.lanes``); ``with_dual`` adds a pass's prices."""
    n_groups = len(rows.grp_cc)
    used = np.unique(rows.group).astype(np.int64)
    used_cc = rows.grp_cc[used]
    lengths = np.diff(words.ptr)
    # How many rows of each category x class require each bit (the lane order's key).
    row_cc = rows.grp_cc[rows.group]
    req = rows.req.astype(np.int64)
    n_cc = int(rows.grp_cc.max()) + 1 if n_groups else 0
    freq = np.stack(
        [np.bincount(row_cc, weights=(req >> b) & 1, minlength=n_cc) for b in range(32)], axis=1
    )
    q0 = np.zeros(n_groups, dtype=np.int64)
    site_parts: list[np.ndarray] = []
    perm_parts: list[np.ndarray] = []
    lane_parts: list[np.ndarray] = []
    at = 0
    for c in np.unique(used_cc):
        members = used[used_cc == c]
        n = int(lengths[members[0]])
        if np.any(lengths[members] != n):
            raise ValueError("groups of one category x class must list the same sites")
        common = np.empty(n, dtype=np.uint32)
        _and_words(members, words.ptr, words.word, common)
        perm = _sort_key(common, freq[c])
        pad = (-n) % BLOCK
        first = words.ptr[members[0]]
        site_parts.append(np.r_[words.site[first : first + n][perm], np.full(pad, -1)])
        perm_parts.append(np.r_[perm, np.zeros(pad, np.int64)])
        lane = np.empty(n + pad, dtype=np.int64)
        lane[perm] = np.arange(n)
        lane[n:] = 0
        lane_parts.append(lane)
        q0[members] = at
        at += n + pad
    lane_site = np.concatenate(site_parts).astype(np.int32) if site_parts else np.zeros(0, np.int32)
    lane_perm = np.concatenate(perm_parts) if perm_parts else np.zeros(0, np.int64)
    lane_of = np.concatenate(lane_parts) if lane_parts else np.zeros(0, np.int64)
    cells = np.unique(rows.ent_off).astype(np.int64)
    col_of = np.zeros(sites.price.shape[1], dtype=np.int32)
    col_of[cells] = np.arange(len(cells), dtype=np.int32)
    n_lanes, n_pt = len(lane_site), len(cells)
    l_price = np.empty((n_pt, n_lanes))
    l_free = np.empty((n_pt, n_lanes), dtype=np.int32)
    l_cdmo = np.empty(n_lanes, dtype=np.int32)
    l_fitq = np.empty(n_lanes)
    l_rbit = np.empty(n_lanes, dtype=np.uint32)
    if n_lanes:
        _lane_columns(
            lane_site, cells, sites.price, sites.free, sites.cdmo, sites.fitq, sites.region_bit,
            l_price, l_free, l_cdmo, l_fitq, l_rbit,
        )  # fmt: skip
    padded = (lengths[used] + BLOCK - 1) // BLOCK * BLOCK
    w0 = np.zeros(n_groups, dtype=np.int64)
    w0[used] = np.cumsum(padded) - padded
    word = np.zeros(int(padded.sum()), dtype=np.uint32)
    if len(word):
        _lane_words(used, words.ptr, words.word, q0, w0, lane_perm, word)
    return Lanes(
        q0, w0, lane_of, lane_site, col_of[rows.ent_off], cells, l_price, l_free,
        np.zeros((0, n_lanes)), l_cdmo, l_fitq, l_rbit, word, _row_order(rows),
    )  # fmt: skip


def _row_order(rows: RowArrays) -> np.ndarray:
    """The rows by group, then requirements: rows of one group read the same sites (a lane
    task scores rows of one group, the walk's neighbours share them), and a row requiring
    what the one before required reuses its masks."""
    return np.lexsort((rows.req, rows.group)).astype(np.int64)


def with_dual(lane: Lanes, dual: np.ndarray) -> Lanes:
    """``lane`` with the dual prices (float64 [S, PT]) of its sites' cells as columns."""
    l_dual = np.empty((len(lane.cells), len(lane.site)))
    if l_dual.size:
        _lane_dual(lane.site, lane.cells, np.ascontiguousarray(dual, np.float64), l_dual)
    return replace(lane, dual=l_dual)


# --------------------------------------------------------------------------- scoring


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Ask the CPU to start loading ``arr[idx]`` (``arr[idx, 0]`` for a 2-D array) into the
    cache; it changes no result. A task's rows are in the pass's order, not their index
    order, so each row's own data (a few scattered words per array) would miss the cache."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        at = [args[1]] + [context.get_constant(types.intp, 0)] * (aryty.ndim - 1)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, at, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read (0), high temporal locality (3), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


@njit(cache=True, inline="always")
def pair_value(a, b, fitq, in_market, fit_market, w_cost, cost, penalty, stab):
    """The value of one pair (the formula of the module docstring; ``penalty`` is the dual
    price of its capacity when pricing, ``stab`` the row's bonus at its previous site).
    Every Numba pass that values a pair calls this; ``matcher.reference`` is its twin."""
    fit = fitq + fit_market if in_market else fitq
    xv = a + b * fit - w_cost * cost - penalty + stab
    xv = min(max(xv, -VALUE_CLIP), VALUE_CLIP)
    return np.int64(np.floor(xv + 0.5))


@njit(cache=True, inline="always")
def _ranks_before(v1, s1, v2, s2):
    return v1 > v2 or (v1 == v2 and s1 < s2)


@njit(cache=True, inline="always")
def _insert(sites, vals, costs, n, s, v, c):
    """Insert (s, v, c) into the first ``n`` slots, sorted best first; returns n + 1."""
    p = n
    while p > 0 and _ranks_before(v, s, vals[p - 1], sites[p - 1]):
        sites[p] = sites[p - 1]
        vals[p] = vals[p - 1]
        costs[p] = costs[p - 1]
        p -= 1
    sites[p] = s
    vals[p] = v
    costs[p] = c
    return n + 1


# The top-K is a binary heap whose root is the worst kept entry (by the same ranking), so a
# newcomer is compared with the root and replaces it in O(log K).


@njit(cache=True, inline="always")
def _swap(sites, vals, costs, i, j):
    sites[i], sites[j] = sites[j], sites[i]
    vals[i], vals[j] = vals[j], vals[i]
    costs[i], costs[j] = costs[j], costs[i]


@njit(cache=True, inline="always")
def _sift_down(sites, vals, costs, i, n):
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and _ranks_before(vals[c], sites[c], vals[c + 1], sites[c + 1]):
            c += 1
        if _ranks_before(vals[c], sites[c], vals[i], sites[i]):
            return
        _swap(sites, vals, costs, i, c)
        i = c


@njit(cache=True, inline="always")
def _heap_push(sites, vals, costs, n, s, v, c):
    sites[n] = s
    vals[n] = v
    costs[n] = c
    i = n
    while i > 0:
        parent = (i - 1) // 2
        if not _ranks_before(vals[parent], sites[parent], vals[i], sites[i]):
            return
        _swap(sites, vals, costs, i, parent)
        i = parent


@njit(cache=True, inline="always")
def _offer(sites, vals, costs, nk, k, s, v, c, o1v, o1s, o2v):
    """One eligible site offered to a row's top-``k`` heap of ``nk`` entries. What it cuts
    (the site itself or the heap's worst) updates the two best values cut and the first's
    site (``outside_best``). Returns (nk, o1v, o1s, o2v)."""
    if nk < k:
        _heap_push(sites, vals, costs, nk, s, v, c)
        return nk + 1, o1v, o1s, o2v
    cv = v
    cs = s
    if _ranks_before(v, s, vals[0], sites[0]):
        cv = vals[0]
        cs = sites[0]
        sites[0] = s
        vals[0] = v
        costs[0] = c
        _sift_down(sites, vals, costs, 0, k)
    if cv > o1v:
        return nk, cv, cs, o1v
    if cv > o2v:
        return nk, o1v, o1s, cv
    return nk, o1v, o1s, o2v


@njit(cache=True, inline="always")
def _heap_sort(sites, vals, costs, n):
    """Heap of ``n`` entries -> sorted best first (the worst is moved to the end each time)."""
    for end in range(n - 1, 0, -1):
        _swap(sites, vals, costs, 0, end)
        _sift_down(sites, vals, costs, 0, end)


# Run helpers: every run of a row (lanes run0[t]..run1[t]) in one call, one loop per run
# (slices, so that Numba's loop starts at 0 and LLVM vectorises it; one call per group of
# loads rather than one per run: each call of a function taking arrays costs reference
# counting). Entries are added in the row's order, up to eight per pass:
# ((c + h0 p0) + h1 p1) + ... is the walk's own sequence of roundings.


@njit(cache=True, inline="always")
def _units32(u):
    # Free hours are int32; clamping the units to int32 keeps every comparison's outcome.
    return np.int32(min(max(u, I32_MIN), I32_MAX))


@njit(cache=True)
def _run_clear(cost, fits, run0, run1, n_runs):
    for t in range(n_runs):
        cost[run0[t] : run1[t]] = 0.0
        fits[run0[t] : run1[t]] = 1


@njit(cache=True)
def _run_1(cost, fits, run0, run1, n_runs, init, h0, u0, p0, f0):
    for t in range(n_runs):
        lo, hi = run0[t], run1[t]
        c = cost[lo:hi]
        ok = fits[lo:hi]
        a0 = p0[lo:hi]
        g0 = f0[lo:hi]
        for i in range(hi - lo):
            c[i] = (0.0 if init else c[i]) + h0 * a0[i]
            ok[i] = (np.uint8(1) if init else ok[i]) & np.uint8(u0 <= g0[i])


@njit(cache=True)
def _run_2(cost, fits, run0, run1, n_runs, init, h0, h1, u0, u1, p0, p1, f0, f1):
    for t in range(n_runs):
        lo, hi = run0[t], run1[t]
        c = cost[lo:hi]
        ok = fits[lo:hi]
        a0, a1 = p0[lo:hi], p1[lo:hi]
        g0, g1 = f0[lo:hi], f1[lo:hi]
        for i in range(hi - lo):
            c[i] = ((0.0 if init else c[i]) + h0 * a0[i]) + h1 * a1[i]
            ok[i] = (np.uint8(1) if init else ok[i]) & np.uint8((u0 <= g0[i]) & (u1 <= g1[i]))


@njit(cache=True)
def _run_3(cost, fits, run0, run1, n_runs, init, h0, h1, h2, u0, u1, u2, p0, p1, p2, f0, f1, f2):
    for t in range(n_runs):
        lo, hi = run0[t], run1[t]
        c = cost[lo:hi]
        ok = fits[lo:hi]
        a0, a1, a2 = p0[lo:hi], p1[lo:hi], p2[lo:hi]
        g0, g1, g2 = f0[lo:hi], f1[lo:hi], f2[lo:hi]
        for i in range(hi - lo):
            c[i] = (((0.0 if init else c[i]) + h0 * a0[i]) + h1 * a1[i]) + h2 * a2[i]
            ok[i] = (np.uint8(1) if init else ok[i]) & np.uint8(
                (u0 <= g0[i]) & (u1 <= g1[i]) & (u2 <= g2[i])
            )


@njit(cache=True)
def _run_4(cost, fits, run0, run1, n_runs, init, h, u, o, q0, lp, lf):
    h0, h1, h2, h3 = h
    u0, u1, u2, u3 = u
    o0, o1, o2, o3 = o
    for t in range(n_runs):
        lo, hi = run0[t], run1[t]
        c = cost[lo:hi]
        ok = fits[lo:hi]
        lo += q0
        hi += q0
        a0, a1, a2, a3 = lp[o0, lo:hi], lp[o1, lo:hi], lp[o2, lo:hi], lp[o3, lo:hi]
        g0, g1, g2, g3 = lf[o0, lo:hi], lf[o1, lo:hi], lf[o2, lo:hi], lf[o3, lo:hi]
        for i in range(hi - lo):
            x = (0.0 if init else c[i]) + h0 * a0[i]
            c[i] = ((x + h1 * a1[i]) + h2 * a2[i]) + h3 * a3[i]
            ok[i] = (np.uint8(1) if init else ok[i]) & np.uint8(
                (u0 <= g0[i]) & (u1 <= g1[i]) & (u2 <= g2[i]) & (u3 <= g3[i])
            )


@njit(cache=True)
def _run_8(cost, fits, run0, run1, n_runs, init, h, u, o, q0, lp, lf):
    """Eight loads at once (``h``, ``u``: their hours and units; ``o``: their columns of the
    price and free-hour tables, read from lane ``q0``): half the passes over ``cost`` and
    ``fits`` of four at a time."""
    h0, h1, h2, h3, h4, h5, h6, h7 = h
    u0, u1, u2, u3, u4, u5, u6, u7 = u
    o0, o1, o2, o3, o4, o5, o6, o7 = o
    for t in range(n_runs):
        lo, hi = run0[t], run1[t]
        c = cost[lo:hi]
        ok = fits[lo:hi]
        lo += q0
        hi += q0
        a0, a1, a2, a3 = lp[o0, lo:hi], lp[o1, lo:hi], lp[o2, lo:hi], lp[o3, lo:hi]
        a4, a5, a6, a7 = lp[o4, lo:hi], lp[o5, lo:hi], lp[o6, lo:hi], lp[o7, lo:hi]
        g0, g1, g2, g3 = lf[o0, lo:hi], lf[o1, lo:hi], lf[o2, lo:hi], lf[o3, lo:hi]
        g4, g5, g6, g7 = lf[o4, lo:hi], lf[o5, lo:hi], lf[o6, lo:hi], lf[o7, lo:hi]
        for i in range(hi - lo):
            x = ((((0.0 if init else c[i]) + h0 * a0[i]) + h1 * a1[i]) + h2 * a2[i]) + h3 * a3[i]
            c[i] = (((x + h4 * a4[i]) + h5 * a5[i]) + h6 * a6[i]) + h7 * a7[i]
            ok[i] = (np.uint8(1) if init else ok[i]) & np.uint8(
                (u0 <= g0[i]) & (u1 <= g1[i]) & (u2 <= g2[i]) & (u3 <= g3[i])
                & (u4 <= g4[i]) & (u5 <= g5[i]) & (u6 <= g6[i]) & (u7 <= g7[i])
            )  # fmt: skip


@njit(cache=True)
def _walk(cost, fits, run0, run1, n_runs, q0, e0, e1, ent_col, ent_units, ent_hours, lp, lf):
    """Cost and capacity of the lanes of the runs, over the row's entries e0..e1. The first
    loads write cost and fits (0.0 + the first product: the bits of a cleared run's sum)
    rather than adding to a cleared run: one pass over them fewer."""
    if e1 == e0:
        _run_clear(cost, fits, run0, run1, n_runs)
        return
    e = e0
    while e1 - e >= 8:
        o = (
            ent_col[e], ent_col[e + 1], ent_col[e + 2], ent_col[e + 3],
            ent_col[e + 4], ent_col[e + 5], ent_col[e + 6], ent_col[e + 7],
        )  # fmt: skip
        h = (
            ent_hours[e], ent_hours[e + 1], ent_hours[e + 2], ent_hours[e + 3],
            ent_hours[e + 4], ent_hours[e + 5], ent_hours[e + 6], ent_hours[e + 7],
        )  # fmt: skip
        u = (
            _units32(ent_units[e]), _units32(ent_units[e + 1]), _units32(ent_units[e + 2]),
            _units32(ent_units[e + 3]), _units32(ent_units[e + 4]), _units32(ent_units[e + 5]),
            _units32(ent_units[e + 6]), _units32(ent_units[e + 7]),
        )  # fmt: skip
        _run_8(cost, fits, run0, run1, n_runs, e == e0, h, u, o, q0, lp, lf)
        e += 8
    if e1 - e >= 4:
        o = (ent_col[e], ent_col[e + 1], ent_col[e + 2], ent_col[e + 3])
        h = (ent_hours[e], ent_hours[e + 1], ent_hours[e + 2], ent_hours[e + 3])
        u = (
            _units32(ent_units[e]), _units32(ent_units[e + 1]), _units32(ent_units[e + 2]),
            _units32(ent_units[e + 3]),
        )  # fmt: skip
        _run_4(cost, fits, run0, run1, n_runs, e == e0, h, u, o, q0, lp, lf)
        e += 4
    left = e1 - e
    if left == 3:
        o0, o1, o2 = ent_col[e], ent_col[e + 1], ent_col[e + 2]
        u0, u1, u2 = _units32(ent_units[e]), _units32(ent_units[e + 1]), _units32(ent_units[e + 2])
        _run_3(
            cost, fits, run0, run1, n_runs, e == e0, ent_hours[e], ent_hours[e + 1],
            ent_hours[e + 2], u0, u1, u2, lp[o0, q0:], lp[o1, q0:], lp[o2, q0:],
            lf[o0, q0:], lf[o1, q0:], lf[o2, q0:],
        )  # fmt: skip
    elif left == 2:
        o0, o1 = ent_col[e], ent_col[e + 1]
        u0, u1 = _units32(ent_units[e]), _units32(ent_units[e + 1])
        _run_2(
            cost, fits, run0, run1, n_runs, e == e0, ent_hours[e], ent_hours[e + 1], u0, u1,
            lp[o0, q0:], lp[o1, q0:], lf[o0, q0:], lf[o1, q0:],
        )  # fmt: skip
    elif left == 1:
        o0 = ent_col[e]
        u0 = _units32(ent_units[e])
        _run_1(cost, fits, run0, run1, n_runs, e == e0, ent_hours[e], u0, lp[o0, q0:], lf[o0, q0:])


@njit(cache=True)
def _masks(word, flag, n, r_proc, r_cert, r_mkt):
    """Process, certification and market tests of lanes 0..n; counts of those passing."""
    n_p2 = 0
    n_p3 = 0
    n_p4 = 0
    for i in range(n):
        w = word[i]
        p2 = np.uint8((w & r_proc) == r_proc)
        p3 = p2 & np.uint8((w & r_cert) == r_cert)
        p4 = p3 & np.uint8((w & r_mkt) == r_mkt)
        n_p2 += p2
        n_p3 += p3
        n_p4 += p4
        flag[i] = p4
    return n_p2, n_p3, n_p4


@njit(cache=True)
def _active_runs(flag64, n_blk, blocks, run0, run1):
    """The blocks holding a survivor of the masks (``blocks``), and the runs of lanes that
    cover them (``run0``, ``run1``; bridging up to RUN_GAP inactive blocks); their counts."""
    n_act = 0
    n_runs = 0
    for blk in range(n_blk):
        live = np.uint64(0)
        for w in range(blk * WORDS_PER_BLOCK, blk * WORDS_PER_BLOCK + WORDS_PER_BLOCK):
            live |= flag64[w]
        if live:
            blocks[n_act] = blk
            n_act += 1
            if n_runs > 0 and blk * BLOCK - run1[n_runs - 1] <= RUN_GAP * BLOCK:
                run1[n_runs - 1] = blk * BLOCK + BLOCK
            else:
                run0[n_runs] = blk * BLOCK
                run1[n_runs] = blk * BLOCK + BLOCK
                n_runs += 1
    return n_act, n_runs


@njit(cache=True)
def _pen_run(pen, lo, hi, init, n, u0, u1, u2, u3, d0, d1, d2, d3):
    """Dual penalty of lanes lo..hi, ``n`` (1-4) loads at a time (units ``u``, dual price
    columns ``d``), added in the loads' order; ``init``: the first loads of the row."""
    pe = pen[lo:hi]
    a0, a1, a2, a3 = d0[lo:hi], d1[lo:hi], d2[lo:hi], d3[lo:hi]
    for i in range(hi - lo):
        x = (0.0 if init else pe[i]) + u0 * a0[i]
        if n > 1:
            x += u1 * a1[i]
        if n > 2:
            x += u2 * a2[i]
        if n > 3:
            x += u3 * a3[i]
        pe[i] = x


@njit(cache=True)
def _mark_excluded(excluded, cdmo, cd):
    for i in range(excluded.shape[0]):
        excluded[i] |= np.uint8(cdmo[i] == cd)


@njit(cache=True, inline="always")
def _rules_value(p4, ex, co, fi, pe, st, fq, in_market, budget, a, b, fit_market, w_cost):
    """One lane past the masks (``p4``): exclusion ``ex``, then budget, then capacity, in
    that order; returns the three rejections and the value (NO_VALUE when not eligible)."""
    over = (p4 ^ ex) & np.uint8(co > budget)
    short = (p4 ^ ex ^ over) & (fi ^ np.uint8(1))
    v = pair_value(a, b, fq, in_market, fit_market, w_cost, co, pe, st)
    return ex, over, short, v if (p4 ^ ex ^ over ^ short) != 0 else NO_VALUE


@njit(cache=True)
def _run_values(
    run0, run1, n_runs, plain, flag, excluded, cost, fits, pen, fitq, rbit, site, val,
    budget, a, b, tmask, prev, stab, fit_market, w_cost,
):  # fmt: skip
    """Rules after the masks, in order, and the value of the lanes of the runs (NO_VALUE
    where not eligible); returns the counts of exclusion, budget and capacity rejections.
    ``plain``: the row excludes no CDMO, has no previous site and no dual prices, so the
    loop does not read ``excluded``, ``pen`` and ``site`` (zeros and no bonus: the same
    values, bit for bit)."""
    n_excl = 0
    n_budget = 0
    n_cap = 0
    for t in range(n_runs):
        lo, hi = run0[t], run1[t]
        fl, co, fi, fq, rb, vv = (
            flag[lo:hi],
            cost[lo:hi],
            fits[lo:hi],
            fitq[lo:hi],
            rbit[lo:hi],
            val[lo:hi],
        )
        if plain:
            for i in range(hi - lo):
                _, over, short, vv[i] = _rules_value(
                    fl[i], np.uint8(0), co[i], fi[i], 0.0, 0.0, fq[i], (rb[i] & tmask) != 0,
                    budget, a, b, fit_market, w_cost,
                )  # fmt: skip
                n_budget += over
                n_cap += short
        else:
            ex_, pe, ss = excluded[lo:hi], pen[lo:hi], site[lo:hi]
            for i in range(hi - lo):
                p4 = fl[i]
                ex, over, short, vv[i] = _rules_value(
                    p4, p4 & ex_[i], co[i], fi[i], pe[i], stab if ss[i] == prev else 0.0, fq[i],
                    (rb[i] & tmask) != 0, budget, a, b, fit_market, w_cost,
                )  # fmt: skip
                n_excl += ex
                n_budget += over
                n_cap += short
    return n_excl, n_budget, n_cap


@njit(cache=True, inline="always")
def _block_max(val):
    m = NO_VALUE
    for i in range(val.shape[0]):
        m = max(m, val[i])
    return m


@njit(cache=True, inline="always")
def _kth_largest(xs, n, k, heap):
    """The k-th largest of xs[:n] other than NO_VALUE (NO_VALUE if fewer), via a min-heap."""
    m = 0
    for t in range(n):
        x = xs[t]
        if x == NO_VALUE:
            continue
        if m < k:
            c = m
            heap[c] = x
            m += 1
            while c > 0:
                p = (c - 1) // 2
                if heap[p] <= heap[c]:
                    break
                heap[p], heap[c] = heap[c], heap[p]
                c = p
        elif x > heap[0]:
            heap[0] = x
            c = 0
            while True:
                ch = 2 * c + 1
                if ch >= m:
                    break
                if ch + 1 < m and heap[ch + 1] < heap[ch]:
                    ch += 1
                if heap[c] <= heap[ch]:
                    break
                heap[c], heap[ch] = heap[ch], heap[c]
                c = ch
    return heap[0] if m == k else NO_VALUE


@njit(cache=True, inline="always")
def _best_two_cdmos(v, s, c, cd, bv, b_s, bc, bcd, av, a_s, ac):
    """Streaming (best, best of a CDMO other than the best's) with one more eligible site;
    by value, then lower site, so the order of the sites does not matter."""
    if cd == bcd:
        if _ranks_before(v, s, bv, b_s):
            return v, s, c, bcd, av, a_s, ac
    elif _ranks_before(v, s, bv, b_s):
        if b_s >= 0:
            return v, s, c, cd, bv, b_s, bc
        return v, s, c, cd, av, a_s, ac
    elif _ranks_before(v, s, av, a_s):
        return bv, b_s, bc, bcd, v, s, c
    return bv, b_s, bc, bcd, av, a_s, ac


@njit(cache=True)
def _score_task(
    i0, i1, order, k, w_cost, fit_market, n_sites,
    q0s, w0s, lane_of, lsite, lp, lf, ld, lcdmo, lfitq, lrbit, lword, use_dual, gptr, gsite,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_col, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
    out_site, out_value, out_cost, out_n, counts, outside,
):  # fmt: skip
    """Score rows ``order[i0:i1]``, all of one group (one call per parallel task)."""
    g = row_group[order[i0]]
    base = gptr[g]
    n_list = gptr[g + 1] - base
    n_blk = (n_list + BLOCK - 1) // BLOCK
    n_pad = n_blk * BLOCK
    q0 = q0s[g]
    word = lword[w0s[g] : w0s[g] + n_pad]
    site = lsite[q0 : q0 + n_pad]
    cdmo = lcdmo[q0 : q0 + n_pad]
    fitq = lfitq[q0 : q0 + n_pad]
    rbit = lrbit[q0 : q0 + n_pad]
    asc = gsite[base : base + n_list]  # the same sites, ascending (GroupWords' order)
    flag = np.zeros(n_pad, dtype=np.uint8)  # padding lanes stay 0: never survivors
    cost = np.zeros(n_pad)
    fits = np.zeros(n_pad, dtype=np.uint8)
    pen = np.zeros(n_pad)
    excluded = np.zeros(n_pad, dtype=np.uint8)
    val = np.full(n_pad, NO_VALUE, dtype=np.int64)
    blocks = np.empty(n_blk, dtype=np.int64)  # active blocks (with a survivor)
    bmax = np.empty(n_blk, dtype=np.int64)  # best value in each active block
    run0 = np.empty(n_blk, dtype=np.int64)  # runs of consecutive active blocks, as lanes
    run1 = np.empty(n_blk, dtype=np.int64)
    heap = np.empty(k + 2, dtype=np.int64)
    order_blk = np.empty(n_blk, dtype=np.int64)  # active blocks by best value, descending
    hits = np.empty(BLOCK, dtype=np.int64)  # lanes of a block the top-K scan visits
    n_p2 = n_p3 = n_p4 = n_act = n_runs = 0

    for ii in range(i0, i1):
        j = order[ii]
        if ii + 1 < i1:  # the next row's data, loaded while this row is scored
            jn = order[ii + 1]
            _prefetch(row_req, jn)
            _prefetch(ent_ptr, jn)
            _prefetch(ent_col, ent_ptr[jn])
            _prefetch(ent_units, ent_ptr[jn])
            _prefetch(ent_hours, ent_ptr[jn])
            _prefetch(excl_ptr, jn)
            _prefetch(row_budget, jn)
            _prefetch(row_a, jn)
            _prefetch(row_b, jn)
            _prefetch(row_tmask, jn)
            _prefetch(row_prev, jn)
            _prefetch(row_stab, jn)
            _prefetch(row_force, jn)
            _prefetch(row_alt, jn)
            _prefetch(out_site, jn)
            _prefetch(out_value, jn)
            _prefetch(out_cost, jn)
            _prefetch(out_n, jn)
            _prefetch(counts, jn)
            _prefetch(outside, jn)
        req = row_req[j]
        # Process, certification and market masks over every lane of the list, and the
        # blocks and runs they leave: the previous row's when it required the same (rows
        # come sorted by group, then requirements: a third of them repeat the one before).
        if ii == i0 or req != row_req[order[ii - 1]]:
            n_p2, n_p3, n_p4 = _masks(
                word, flag, n_list, req & np.uint32(PROC_FIELD), req & np.uint32(CERT_FIELD),
                req & np.uint32(MKT_FIELD),
            )  # fmt: skip
            n_act, n_runs = _active_runs(flag.view(np.uint64), n_blk, blocks, run0, run1)

        # Cost and capacity (and dual penalty) of the lanes in active blocks.
        e0 = ent_ptr[j]
        e1 = ent_ptr[j + 1]
        _walk(cost, fits, run0, run1, n_runs, q0, e0, e1, ent_col, ent_units, ent_hours, lp, lf)
        if use_dual:
            if e1 == e0:
                for t in range(n_runs):
                    pen[run0[t] : run1[t]] = 0.0
            for e in range(e0, e1, 4):  # four loads a pass over pen (one each before)
                n_e = min(4, e1 - e)
                c0 = ent_col[e]
                c1 = ent_col[e + 1] if n_e > 1 else c0
                c2 = ent_col[e + 2] if n_e > 2 else c0
                c3 = ent_col[e + 3] if n_e > 3 else c0
                u0 = np.float64(ent_units[e])
                u1 = np.float64(ent_units[e + 1]) if n_e > 1 else 0.0
                u2 = np.float64(ent_units[e + 2]) if n_e > 2 else 0.0
                u3 = np.float64(ent_units[e + 3]) if n_e > 3 else 0.0
                for t in range(n_runs):
                    _pen_run(
                        pen, run0[t], run1[t], e == e0, n_e, u0, u1, u2, u3,
                        ld[c0, q0:], ld[c1, q0:], ld[c2, q0:], ld[c3, q0:],
                    )  # fmt: skip
        x0 = excl_ptr[j]
        x1 = excl_ptr[j + 1]
        for x in range(x0, x1):
            for t in range(n_runs):
                lo, hi = run0[t], run1[t]
                _mark_excluded(excluded[lo:hi], cdmo[lo:hi], excl[x])

        # Exclusions, budget, capacity in that order, and values.
        plain = not use_dual and x1 == x0 and row_prev[j] < 0
        n_excl, n_budget, n_cap = _run_values(
            run0, run1, n_runs, plain, flag, excluded, cost, fits, pen, fitq, rbit, site, val,
            row_budget[j], row_a[j], row_b[j], row_tmask[j], row_prev[j], row_stab[j],
            fit_market, w_cost,
        )  # fmt: skip
        if x1 > x0:
            for t in range(n_runs):
                excluded[run0[t] : run1[t]] = 0

        # Forced sites: their lanes (the list is searched in GroupWords' ascending order).
        f0 = row_force[j, 0]
        f1 = row_force[j, 1]
        pf0 = -1
        pf1 = -1
        if f0 >= 0:
            p = np.searchsorted(asc, f0)
            if p < n_list and asc[p] == f0:
                pf0 = lane_of[q0 + p]
        if f1 >= 0 and f1 != f0:
            p = np.searchsorted(asc, f1)
            if p < n_list and asc[p] == f1:
                pf1 = lane_of[q0 + p]

        # The top-K needs the k best non-forced values and the two next (outside_best):
        # when k + 2 blocks each hold a non-forced value >= t_min, no lane below t_min can
        # enter them, and the scan looks at the lanes >= t_min only (pass 0). The
        # alternative CDMO's best is among them too unless all of them are of one CDMO:
        # then pass 1 looks at the rest.
        want_alt = row_alt[j]
        for t in range(n_act):
            b0 = blocks[t] * BLOCK
            bmax[t] = _block_max(val[b0 : b0 + BLOCK])
            if pf0 // BLOCK == blocks[t] or pf1 // BLOCK == blocks[t]:
                m = NO_VALUE
                for i in range(b0, b0 + BLOCK):
                    if i != pf0 and i != pf1:
                        m = max(m, val[i])
                bmax[t] = m
        t_min = max(NO_VALUE + 1, _kth_largest(bmax, n_act, k + 2, heap))
        # Blocks that may hold a kept value, best first: the values cut early are high, so
        # thr (o2v) rises fast and the scan stops at the first block below it.
        n_c = 0
        for t in range(n_act):
            if bmax[t] >= t_min:
                m = bmax[t]
                c = n_c
                while c > 0 and bmax[order_blk[c - 1]] < m:
                    order_blk[c] = order_blk[c - 1]
                    c -= 1
                order_blk[c] = t
                n_c += 1

        sites = out_site[j]
        vals = out_value[j]
        costs = out_cost[j]
        nk = 0
        # Two best values cut from the list (and the site of the first), for outside_best.
        o1v = NO_VALUE
        o1s = -1
        o2v = NO_VALUE
        # Best eligible site, and best eligible site of a CDMO other than the best's (by
        # value, then lower site: any lane order gives the same).
        bv = NO_VALUE
        b_s = -1
        bc = 0.0
        bcd = -1
        av = NO_VALUE
        a_s = -1
        ac = 0.0
        thr = t_min
        # A forced lane's value: val holds this row's values on its runs only; a lane off
        # them failed the masks (flag 0), so it has no value.
        fv0 = val[pf0] if pf0 >= 0 and flag[pf0] else NO_VALUE
        fv1 = val[pf1] if pf1 >= 0 and flag[pf1] else NO_VALUE
        for pass_ in range(2):
            if pass_ == 1:
                for pf, fv in ((pf0, fv0), (pf1, fv1)):  # they count for the best and alternative
                    if want_alt and fv != NO_VALUE:
                        bv, b_s, bc, bcd, av, a_s, ac = _best_two_cdmos(
                            fv, site[pf], cost[pf], cdmo[pf], bv, b_s, bc, bcd, av, a_s, ac
                        )
                if not want_alt or (a_s >= 0 and av >= t_min):
                    break
                n_c = n_act
                for t in range(n_act):
                    order_blk[t] = t
            for r in range(n_c):
                t = order_blk[r]
                if pass_ == 0 and bmax[t] < thr:
                    break
                # The block's lanes that may count, gathered without a branch per lane (most
                # fall below thr: a branch each was mispredicted), then visited in order.
                b0 = blocks[t] * BLOCK
                n_h = 0
                for i in range(b0, b0 + BLOCK):
                    v = val[i]
                    hits[n_h] = i
                    if pass_ == 0:
                        n_h += 1 if v >= thr else 0
                    else:
                        n_h += 1 if (v < t_min) & (v != NO_VALUE) else 0
                for h_ in range(n_h):
                    i = hits[h_]
                    v = val[i]
                    if (pass_ == 0 and v < thr) or i == pf0 or i == pf1:
                        continue
                    s = site[i]
                    c = cost[i]
                    if want_alt:
                        bv, b_s, bc, bcd, av, a_s, ac = _best_two_cdmos(
                            v, s, c, cdmo[i], bv, b_s, bc, bcd, av, a_s, ac
                        )
                    nk, o1v, o1s, o2v = _offer(sites, vals, costs, nk, k, s, v, c, o1v, o1s, o2v)
                    # Below the second value cut nothing changes the list any more; nor the
                    # alternative CDMO's best once two CDMOs rank above: whichever is best,
                    # the other ranks above the lane.
                    lift = o2v if not want_alt else (min(o2v, av) if a_s >= 0 else NO_VALUE)
                    if pass_ == 0 and lift > thr:
                        thr = lift

        _heap_sort(sites, vals, costs, nk)
        for pf, f, fv in ((pf0, f0, fv0), (pf1, f1, fv1)):
            if fv != NO_VALUE:
                nk = _insert(sites, vals, costs, nk, f, fv, cost[pf])
        if want_alt and a_s >= 0:
            kept = False
            for t in range(nk):
                if sites[t] == a_s:
                    kept = True
                    break
            if not kept:
                nk = _insert(sites, vals, costs, nk, a_s, av, ac)
                if a_s == o1s:
                    o1v = o2v
        out_n[j] = nk
        outside[j] = o1v
        counts[j, R_CATEGORY] = n_sites - n_list
        counts[j, R_PROCESS] = n_list - n_p2
        counts[j, R_CERT] = n_p2 - n_p3
        counts[j, R_MARKET] = n_p3 - n_p4
        counts[j, R_EXCLUDED] = n_excl
        counts[j, R_BUDGET] = n_budget
        counts[j, R_CAPACITY] = n_cap
        counts[j, ELIGIBLE] = n_p4 - n_excl - n_budget - n_cap


# The pair-by-pair walk: for each row, each site of its list that passes the masks, the
# row's loads one after the other. Cheaper than the lanes for small calls (a project's
# instant candidates, small markets), where the lane layout's set-up is not repaid; it is
# also the yardstick the lanes are tested against (the same results, bit for bit).


@njit(cache=True)
def _walk_rows(
    i0, i1, order, flags, surv, s_cost, s_fits, s_pen, k, w_cost, fit_market, n_sites,
    site_cdmo, site_rbit, site_fitq, free, price, dual, use_dual, gptr, gsite, gword,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
    out_site, out_value, out_cost, out_n, counts, outside,
):  # fmt: skip
    """Score rows ``order[i0:i1]`` (one call per parallel task: few array hand-offs)."""
    for ii in range(i0, i1):
        j = order[ii]
        g = row_group[j]
        base = gptr[g]
        n_list = gptr[g + 1] - base
        req = row_req[j]
        r_proc = req & np.uint32(PROC_FIELD)
        r_cert = req & np.uint32(CERT_FIELD)
        r_mkt = req & np.uint32(MKT_FIELD)

        # Phase A: process, certification and market mask tests over the group's site list,
        # branch-free so that it vectorises; `flags` marks the survivors.
        n_p2 = 0
        n_p3 = 0
        n_p4 = 0
        for i in range(n_list):
            w = gword[base + i]
            p2 = np.uint8((w & r_proc) == r_proc)
            p3 = p2 & np.uint8((w & r_cert) == r_cert)
            p4 = p3 & np.uint8((w & r_mkt) == r_mkt)
            n_p2 += p2
            n_p3 += p3
            n_p4 += p4
            flags[i] = p4
        m = 0
        for i in range(n_list):
            surv[m] = gsite[base + i]
            m += flags[i]

        # Phase B: exclusions, budget and capacity on the survivors; value and top-K.
        n_excl = 0
        n_budget = 0
        n_cap = 0
        n_elig = 0
        x0 = excl_ptr[j]
        x1 = excl_ptr[j + 1]
        e0 = ent_ptr[j]
        e1 = ent_ptr[j + 1]
        budget = row_budget[j]
        a = row_a[j]
        b = row_b[j]
        tmask = row_tmask[j]
        prev = row_prev[j]
        f0 = row_force[j, 0]
        f1 = row_force[j, 1]
        want_alt = row_alt[j]
        sites = out_site[j]
        vals = out_value[j]
        costs = out_cost[j]
        nk = 0
        # Two best values cut from the list (and the site of the first), for outside_best.
        o1v = NO_VALUE
        o1s = -1
        o2v = NO_VALUE
        # Forced sites found eligible.
        fv0 = NO_VALUE
        fc0 = 0.0
        fok0 = False
        fv1 = NO_VALUE
        fc1 = 0.0
        fok1 = False
        # Best eligible site, and best eligible site of a CDMO other than the best's.
        bv = NO_VALUE
        b_s = -1
        bc = 0.0
        bcd = -1
        av = NO_VALUE
        a_s = -1
        ac = 0.0
        # Phase B1: cost and capacity of every survivor. No data-dependent branch here, so
        # the CPU runs ahead over survivors and overlaps their cache misses.
        for t in range(m):
            s = surv[t]
            cost = 0.0
            fits = True
            for e in range(e0, e1):
                o = ent_off[e]
                cost += ent_hours[e] * price[s, o]
                fits &= ent_units[e] <= free[s, o]
            s_cost[t] = cost
            s_fits[t] = fits
        # Optional resource prices (Lagrangian duals): the value becomes a reduced value,
        # value - sum of price x whole hours, which prices congested capacity.
        if use_dual:
            for t in range(m):
                s = surv[t]
                pen = 0.0
                for e in range(e0, e1):
                    pen += ent_units[e] * dual[s, ent_off[e]]
                s_pen[t] = pen
        # Phase B2: the remaining rules in order, value, top-K.
        for t in range(m):
            s = surv[t]
            cd = site_cdmo[s]
            excluded = False
            for x in range(x0, x1):
                if excl[x] == cd:
                    excluded = True
                    break
            if excluded:
                n_excl += 1
                continue
            cost = s_cost[t]
            fits = s_fits[t]
            if cost > budget:
                n_budget += 1
                continue
            if not fits:
                n_cap += 1
                continue
            n_elig += 1
            v = pair_value(
                a, b, site_fitq[s], (site_rbit[s] & tmask) != 0, fit_market, w_cost, cost,
                s_pen[t] if use_dual else 0.0, row_stab[j] if s == prev else 0.0,
            )  # fmt: skip

            if want_alt:
                bv, b_s, bc, bcd, av, a_s, ac = _best_two_cdmos(
                    v, s, cost, cd, bv, b_s, bc, bcd, av, a_s, ac
                )

            if s == f0:
                fv0 = v
                fc0 = cost
                fok0 = True
                continue
            if s == f1:
                fv1 = v
                fc1 = cost
                fok1 = True
                continue
            nk, o1v, o1s, o2v = _offer(sites, vals, costs, nk, k, s, v, cost, o1v, o1s, o2v)

        _heap_sort(sites, vals, costs, nk)
        if fok0:
            nk = _insert(sites, vals, costs, nk, f0, fv0, fc0)
        if fok1:
            nk = _insert(sites, vals, costs, nk, f1, fv1, fc1)
        if want_alt and a_s >= 0:
            kept = False
            for t in range(nk):
                if sites[t] == a_s:
                    kept = True
                    break
            if not kept:
                nk = _insert(sites, vals, costs, nk, a_s, av, ac)
                if a_s == o1s:
                    o1v = o2v
        out_n[j] = nk
        outside[j] = o1v
        counts[j, R_CATEGORY] = n_sites - n_list
        counts[j, R_PROCESS] = n_list - n_p2
        counts[j, R_CERT] = n_p2 - n_p3
        counts[j, R_MARKET] = n_p3 - n_p4
        counts[j, R_EXCLUDED] = n_excl
        counts[j, R_BUDGET] = n_budget
        counts[j, R_CAPACITY] = n_cap
        counts[j, ELIGIBLE] = n_elig


@njit(cache=True, parallel=True, nogil=True)
def _walk_kernel(
    order, k, w_cost, fit_market, n_sites, max_list,
    site_cdmo, site_rbit, site_fitq, free, price, dual, use_dual, gptr, gsite, gword,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
    out_site, out_value, out_cost, out_n, counts, outside,
):  # fmt: skip
    n = order.shape[0]
    n_tasks = (n + WALK_ROWS_PER_TASK - 1) // WALK_ROWS_PER_TASK
    for task in prange(n_tasks):
        flags = np.empty(max_list, dtype=np.uint8)
        surv = np.empty(max_list, dtype=np.int32)
        s_cost = np.empty(max_list, dtype=np.float64)
        s_fits = np.empty(max_list, dtype=np.bool_)
        s_pen = np.empty(max_list, dtype=np.float64)
        _walk_rows(
            task * WALK_ROWS_PER_TASK, min(n, (task + 1) * WALK_ROWS_PER_TASK), order, flags, surv,
            s_cost, s_fits, s_pen, k, w_cost, fit_market, n_sites,
            site_cdmo, site_rbit, site_fitq, free, price, dual, use_dual, gptr, gsite, gword,
            row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units,
            ent_hours, row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
            out_site, out_value, out_cost, out_n, counts, outside,
        )  # fmt: skip


@njit(cache=True, parallel=True, nogil=True)
def _score_kernel(
    order, tptr, k, w_cost, fit_market, n_sites,
    q0s, w0s, lane_of, lsite, lp, lf, ld, lcdmo, lfitq, lrbit, lword, use_dual, gptr, gsite,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_col, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
    out_site, out_value, out_cost, out_n, counts, outside,
):  # fmt: skip
    for task in prange(tptr.shape[0] - 1):
        _score_task(
            tptr[task], tptr[task + 1], order, k, w_cost, fit_market, n_sites,
            q0s, w0s, lane_of, lsite, lp, lf, ld, lcdmo, lfitq, lrbit, lword, use_dual, gptr,
            gsite, row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_col, ent_units,
            ent_hours, row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
            out_site, out_value, out_cost, out_n, counts, outside,
        )  # fmt: skip


def _tasks(order: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Task boundaries in ``order``: runs of one group, cut every ROWS_PER_TASK rows."""
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(g)]
    sizes = -(-(ends - starts) // ROWS_PER_TASK)
    # Within a group's run, tasks start every ROWS_PER_TASK rows.
    first = np.repeat(starts, sizes)
    step = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.r_[first + step * ROWS_PER_TASK, len(g)].astype(np.int64)


@njit(cache=True, parallel=True)
def _compact_kernel(ptr, buf_site, buf_value, buf_cost, cand_site, cand_value, cand_cost):
    for j in prange(ptr.shape[0] - 1):
        base = ptr[j]
        for t in range(ptr[j + 1] - base):
            cand_site[base + t] = buf_site[j, t]
            cand_value[base + t] = buf_value[j, t]
            cand_cost[base + t] = buf_cost[j, t]


def method_for(rows: RowArrays, sites: SiteArrays) -> str:
    """The kernel ``score_pairs`` takes by default for these rows and sites."""
    return "lanes" if rows.n_rows * sites.n_sites >= LANES_MIN_PAIRS else "walk"


def score_pairs(
    sites: SiteArrays,
    rows: RowArrays,
    words: GroupWords,
    *,
    k: int,
    w_cost: float,
    fit_market: float,
    dual: np.ndarray | None = None,
    stop: Callable[[], bool] | None = None,
    method: str | None = None,
    layout: Lanes | None = None,
) -> Scored:
    """Eligibility and value of every row x site pair; at most ``k`` + 3 candidates per row.

    With ``stop`` (e.g. a run's cancel flag), rows are scored ``ROWS_PER_CHECK`` at a time
    and ``stop()`` is asked between the calls: ``Stopped`` is raised once it is true (what
    was scored is incomplete, so nothing of it may be used).

    With ``dual`` (float64 [S, PT], prices per whole hour of site capacity), values are
    reduced values: value - sum of dual x whole hours used (column generation's pricing).

    The candidate list of a row is its ``k`` best eligible sites, plus its forced sites when
    eligible (they never compete for the ``k`` slots), plus, for ``alt`` rows, the best site
    of a CDMO other than the best site's when that one is not already in the list (so that a
    second source at another CDMO is always representable). ``outside_best`` is exactly the
    best value among the eligible sites left out.

    ``method`` ("lanes" or "walk"; by default ``method_for`` the size) picks the kernel: both
    return the same bits. ``layout`` is ``lanes(sites, rows, words)`` when the caller keeps
    one for several passes (built here otherwise).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if method is None:
        method = method_for(rows, sites)
    if method not in ("lanes", "walk"):
        raise ValueError("method must be 'lanes' or 'walk'")
    n = rows.n_rows
    width = k + EXTRA_SLOTS
    # Only the first out_n[j] slots of a row are ever read, and the kernel fills them.
    buf_site = np.empty((n, width), dtype=np.int32)
    buf_value = np.empty((n, width), dtype=np.int64)
    buf_cost = np.empty((n, width), dtype=np.float64)
    out_n = np.zeros(n, dtype=np.int64)
    counts = np.zeros((n, N_COUNTS), dtype=np.int64)  # stays 0 when there are no sites
    outside = np.full(n, NO_VALUE, dtype=np.int64)
    if n and sites.n_sites:
        dual_arr = np.zeros((1, 1)) if dual is None else np.ascontiguousarray(dual, np.float64)
        tail = (
            rows.group, rows.req, rows.tmask, rows.excl_ptr, rows.excl, rows.ent_ptr,
            None, rows.ent_units, rows.ent_hours, rows.budget, rows.a, rows.b,
            rows.stab, rows.prev, rows.force, rows.alt,
            buf_site, buf_value, buf_cost, out_n, counts, outside,
        )  # fmt: skip
        if method == "lanes":
            lane = lanes(sites, rows, words) if layout is None else layout
            if dual is not None:
                lane = with_dual(lane, dual)
            args = (
                k, float(w_cost), float(fit_market), sites.n_sites,
                lane.q0, lane.w0, lane.lane_of, lane.site, lane.price, lane.free, lane.dual,
                lane.cdmo, lane.fitq, lane.region_bit, lane.word, dual is not None,
                words.ptr, words.site, *tail[:6], lane.ent_col, *tail[7:],
            )  # fmt: skip
        else:
            args = (
                k, float(w_cost), float(fit_market), sites.n_sites,
                max(1, int(np.diff(words.ptr).max())), sites.cdmo, sites.region_bit,
                sites.fitq, sites.free, sites.price, dual_arr, dual is not None,
                words.ptr, words.site, words.word, *tail[:6], rows.ent_off, *tail[7:],
            )  # fmt: skip
        order = lane.order if method == "lanes" else _row_order(rows)
        step = n if stop is None else ROWS_PER_CHECK
        for lo in range(0, n, step):
            if stop is not None and stop():
                raise Stopped("scoring stopped")
            part = order[lo : lo + step]
            # Dynamic scheduling: row costs vary a lot between groups, equal halves would not.
            if method == "lanes":
                with parallel_chunksize(TASKS_PER_GRAB):
                    _score_kernel(part, _tasks(part, rows.group), *args)
            else:
                with parallel_chunksize(WALK_TASKS_PER_GRAB):
                    _walk_kernel(part, *args)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_n, out=ptr[1:])
    total = int(ptr[-1])
    cand_site = np.empty(total, dtype=np.int32)
    cand_value = np.empty(total, dtype=np.int64)
    cand_cost = np.empty(total, dtype=np.float64)
    if total:
        _compact_kernel(ptr, buf_site, buf_value, buf_cost, cand_site, cand_value, cand_cost)
    return Scored(ptr, cand_site, cand_value, cand_cost, counts, outside)


def evaluate(
    sites: SiteArrays, rows: RowArrays, *, k: int, w_cost: float, fit_market: float
) -> Scored:
    """Group words, then scores: the whole kernel pipeline."""
    return score_pairs(
        sites, rows, group_words(sites, rows), k=k, w_cost=w_cost, fit_market=fit_market
    )


def take_rows(rows: RowArrays, idx: np.ndarray) -> RowArrays:
    """The rows ``idx`` only (same groups): for benchmarks and tests on a subset."""
    idx = np.asarray(idx, dtype=np.int64)

    def ragged(ptr: np.ndarray, *data: np.ndarray) -> tuple[np.ndarray, ...]:
        lengths = ptr[idx + 1] - ptr[idx]
        new_ptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_ptr[1:])
        starts = np.repeat(ptr[idx] - new_ptr[:-1], lengths)
        pos = starts + np.arange(int(new_ptr[-1]), dtype=np.int64)
        return (new_ptr, *(d[pos] for d in data))

    excl_ptr, excl = ragged(rows.excl_ptr, rows.excl)
    ent_ptr, off, units, hours = ragged(rows.ent_ptr, rows.ent_off, rows.ent_units, rows.ent_hours)
    return RowArrays(
        group=rows.group[idx],
        req=rows.req[idx],
        tmask=rows.tmask[idx],
        excl_ptr=excl_ptr,
        excl=excl,
        ent_ptr=ent_ptr,
        ent_off=off,
        ent_units=units,
        ent_hours=hours,
        budget=rows.budget[idx],
        a=rows.a[idx],
        b=rows.b[idx],
        stab=rows.stab[idx],
        prev=rows.prev[idx],
        force=rows.force[idx],
        alt=rows.alt[idx],
        grp_cc=rows.grp_cc,
        grp_m0=rows.grp_m0,
        grp_m1=rows.grp_m1,
    )


# --------------------------------------------------------------------------- warm-up


def tiny_inputs(n_rows: int = 3, n_sites: int = 4, months: int = 2) -> tuple[SiteArrays, RowArrays]:
    """Small valid arrays of every dtype the kernels take (for warm-up and tests)."""
    pt = 10 * months
    sites = SiteArrays(
        cc=np.full(n_sites, 0x7FFFFFF, dtype=np.uint32),
        cdmo=np.arange(n_sites, dtype=np.int32),
        region_bit=np.ones(n_sites, dtype=np.uint32),
        word0=np.full(n_sites, PROC_FIELD | (1 << MKT_SHIFT), dtype=np.uint32),
        fitq=np.full(n_sites, 0.5),
        free=np.full((n_sites, pt), 100, dtype=np.int32),
        price=np.ones((n_sites, pt)),
        cert_ptr=np.arange(n_sites + 1, dtype=np.int64),
        cert_kind=np.zeros(n_sites, dtype=np.int32),
        cert_cls=np.full(n_sites, 7, dtype=np.uint32),
        cert_first=np.zeros(n_sites, dtype=np.int32),
        cert_last=np.full(n_sites, months - 1, dtype=np.int32),
        access_region=np.array([-1, 0, 1, 2] + [-1] * 6, dtype=np.int32),
    )
    rows = RowArrays(
        group=np.zeros(n_rows, dtype=np.int32),
        req=np.full(n_rows, 1 | (1 << PROC_SHIFT), dtype=np.uint32),
        tmask=np.ones(n_rows, dtype=np.uint32),
        excl_ptr=np.zeros(n_rows + 1, dtype=np.int64),
        excl=np.zeros(0, dtype=np.int32),
        ent_ptr=np.arange(n_rows + 1, dtype=np.int64),
        ent_off=np.zeros(n_rows, dtype=np.int32),
        ent_units=np.full(n_rows, 10, dtype=np.int64),
        ent_hours=np.full(n_rows, 10.0),
        budget=np.full(n_rows, np.inf),
        a=np.full(n_rows, 1000.0),
        b=np.full(n_rows, 500.0),
        stab=np.zeros(n_rows),
        prev=np.full(n_rows, -1, dtype=np.int32),
        force=np.full((n_rows, 2), -1, dtype=np.int32),
        alt=np.ones(n_rows, dtype=np.bool_),
        grp_cc=np.zeros(1, dtype=np.int32),
        grp_m0=np.zeros(1, dtype=np.int32),
        grp_m1=np.full(1, months - 1, dtype=np.int32),
    )
    return sites, rows


def warm_up() -> float:
    """Compile (or load from the on-disk cache) every kernel; returns the seconds it took.

    Call once at worker / app start so that no request pays JIT time.
    """
    t0 = time.perf_counter()
    sites, rows = tiny_inputs()
    words = group_words(sites, rows)
    for method in ("walk", "lanes"):
        score_pairs(sites, rows, words, k=2, w_cost=0.01, fit_market=0.25, method=method)
    return time.perf_counter() - t0
