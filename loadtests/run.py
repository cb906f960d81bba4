"""Headless load tests with a summary: ``python -m loadtests.run {capacity,scenario}``.

Without ``--base-url`` it starts a production-like topology itself and removes it afterwards:
a fresh PostgreSQL database on ``DATABASE_URL``'s server (migrated with ``cdmo db upgrade``,
an operator key from ``cdmo seed``), a Redis key prefix of its own on ``REDIS_URL``,
``--processes`` uvicorn API processes behind one port, and ``cdmo worker`` processes when
that command exists. With ``--base-url URL --operator-key KEY`` it loads any deployment.

* ``capacity``: closed-loop phases (loadtests/capacity.py), one endpoint at a time at each
  ``--users`` level, ``GET /health`` first and last; each endpoint's req/s is divided by the
  mean of the two ``/health`` phases of the same run.
* ``scenario``: makers, CDMOs and operators behaving as in production (loadtests/users.py).

Every phase measures only after all users finished their setup (creating their organisation
and key, sites, listings, projects). Output under ``--out`` (default
``loadtests/results/<time>``): per phase Locust's CSV files and HTML report, and
``summary.md`` / ``summary.json`` with req/s, p50/p95/p99, error counts and ratios.
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import httpx  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.html import get_html_report  # noqa: E402
from locust.stats import StatsCSVFileWriter  # noqa: E402

from loadtests import capacity, users  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
PERCENTILES = [0.5, 0.95, 0.99]


# --- topology --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Target:
    base_url: str
    operator_key: str
    description: str
    api_pid: int | None = None


@contextlib.contextmanager
def topology(processes: int, database_url: str, redis_url: str) -> Iterator[Target]:
    """A fresh database + Redis prefix + N API processes (+ workers when available)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    tag = uuid.uuid4().hex[:8]
    admin_url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    db_name = f"cdmo_load_{tag}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    url = make_url(admin_url).set(database=db_name).render_as_string(hide_password=False)
    prefix = f"cdmo-load:{tag}:"
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "CDMO_ENV": "production",
        "CDMO_AUTH__HMAC_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "CDMO_REDIS__KEY_PREFIX": prefix,
        "CDMO_RATE_LIMIT__REQUESTS": "10000000",  # load tests measure capacity, not quotas
        "CDMO_LOG_LEVEL": "WARNING",
    }
    started: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([_bin("cdmo"), "db", "upgrade"], env=env, check=True, capture_output=True)
        seeded = subprocess.run(
            [_bin("cdmo"), "seed"], env=env, check=True, capture_output=True, text=True
        )
        match = re.search(r"^(ck_\S+)$", seeded.stdout, re.M)
        assert match, seeded.stdout
        api = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes),
                "--no-access-log", "--log-level", "warning",
            ],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        started.append(api)
        workers = _start_workers(env)
        started.extend(workers)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, api)
        _wait_settled(api.pid)
        yield Target(
            base,
            match.group(1),
            f"{processes} API process(es) (uvicorn, httptools/uvloop), "
            f"{sum(1 for w in workers if w.args[1] == 'worker')} worker(s) and "
            f"{sum(1 for w in workers if w.args[1] == 'scheduler')} scheduler, "
            "PostgreSQL + Redis on this machine",
            api.pid,
        )
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()
        _drop_redis_prefix(redis_url, prefix)


def _start_workers(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """`cdmo worker` (and `cdmo scheduler`) once the match-runs branch provides it; none
    before."""
    cdmo = _bin("cdmo")
    probe = subprocess.run([cdmo, "worker", "--help"], env=env, capture_output=True)
    if probe.returncode != 0:
        return []
    return [
        subprocess.Popen([cdmo, "worker"], env=env, cwd=ROOT, start_new_session=True),
        # the one scheduler: the periodic expiry and webhook jobs the workers run
        subprocess.Popen([cdmo, "scheduler"], env=env, cwd=ROOT, start_new_session=True),
    ]


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{base}/ready did not answer 200 within {timeout_s} s")


def _wait_settled(api_pid: int, timeout_s: float = 120) -> None:
    """Until the API processes are idle (under 5 % of a core over a second): each warms the
    matcher in a thread after it is ready (README "Instant candidates"), which would count
    in the first phases' CPU per request and throughput."""
    deadline = time.monotonic() + timeout_s
    before = _cpu_shares(api_pid)["api"]
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _cpu_shares(api_pid)["api"]
        if now - before < 0.05:
            return
        before = now


def _drop_redis_prefix(redis_url: str, prefix: str) -> None:
    import redis

    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


# --- one measured phase -------------------------------------------------------------------


@dataclass
class Row:
    name: str
    requests: int
    failures: int
    rps: float  # successful answers per second (a shed 503 is not throughput)
    p50: float
    p95: float
    p99: float
    max: float
    statuses: dict[str, int]
    # CPU time of the API processes per successful request in the phase (a phase of one
    # endpoint, on a topology started here): less noisy than req/s on a shared machine
    cpu_ms: float | None = None
    # cores busy during the phase (CPU seconds / wall seconds): the API processes, this
    # process (Locust), every PostgreSQL process on the machine, and the whole machine
    cores: dict[str, float] | None = None


def run_phase(
    user_classes: list[type], target: Target, n_users: int, seconds: float, out: Path, label: str
) -> list[Row]:
    """Spawn ``n_users``, wait for their setup, then measure for ``seconds``."""
    os.environ["CDMO_OPERATOR_KEY"] = target.operator_key
    env = Environment(user_classes=user_classes, host=target.base_url)
    statuses: dict[tuple[str, str], int] = {}

    def count(request_type: str, name: str, response: Any, exception: Any, **_: Any) -> None:
        code = "error" if response is None else str(getattr(response, "status_code", 0) or 0)
        if exception is not None and code in ("0", "error"):
            code = type(exception).__name__
        statuses[(name, code)] = statuses.get((name, code), 0) + 1

    env.events.request.add_listener(count)
    runner = env.create_local_runner()
    try:
        runner.start(n_users, spawn_rate=max(10, n_users))
        deadline = time.monotonic() + 120
        gevent.sleep(1)
        while time.monotonic() < deadline and not _setup_done(env, n_users):
            gevent.sleep(0.5)
        gevent.sleep(1)
        env.stats.reset_all()
        statuses.clear()
        out.mkdir(parents=True, exist_ok=True)
        spy = _profile(target, seconds, out / f"{label}_pyspy.txt")
        before, wall = _cpu_shares(target.api_pid), time.monotonic()
        gevent.sleep(seconds)
        after, wall = _cpu_shares(target.api_pid), time.monotonic() - wall
        used = {k: after[k] - before[k] for k in after}
        rows = _rows(env, statuses)
        if len(rows) == 1 and target.api_pid is not None:
            ok = rows[0].rps * seconds
            rows[0].cpu_ms = 1000 * used["api"] / ok if ok else None
            rows[0].cores = {k: v / wall for k, v in used.items()}
        if spy is not None:
            spy.wait(timeout=30)
            _profile_summary(out / f"{label}_pyspy.txt", out / f"{label}_profile.md")
        writer = StatsCSVFileWriter(env, PERCENTILES, str(out / label))
        with open(out / f"{label}_stats.csv", "w", newline="") as f:
            writer.requests_csv(csv.writer(f))
        with open(out / f"{label}_failures.csv", "w", newline="") as f:
            writer.failures_csv(csv.writer(f))
        (out / f"{label}.html").write_text(get_html_report(env, show_download_link=False))
        return rows
    finally:
        runner.quit()
        env.events.request.remove_listener(count)


def _cpu_shares(api_pid: int | None) -> dict[str, float]:
    """CPU seconds so far (user + system; Linux /proc, 0 elsewhere) of the API processes
    (``api_pid`` and its descendants), this process (Locust), the PostgreSQL processes, and
    the whole machine (every core busy)."""
    if not Path("/proc").is_dir():
        return {"api": 0.0, "locust": 0.0, "postgres": 0.0, "machine": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                name, _, rest = (entry / "stat").read_text().partition(" (")[2].rpartition(")")
                fields = rest.split()
                cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
                stats[int(entry.name)] = (int(fields[1]), cpu)
                postgres += cpu if name == "postgres" else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # /proc/stat's first line: time per state summed over cores; idle and iowait are not busy
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    machine = (sum(ticks[:8]) - ticks[3] - ticks[4]) / tick
    return {
        "api": _tree_cpu_s(stats, api_pid),
        "locust": usage.ru_utime + usage.ru_stime,
        "postgres": postgres,
        "machine": machine,
    }


def _tree_cpu_s(stats: dict[int, tuple[int, float]], pid: int | None) -> float:
    """CPU seconds of ``pid`` and its descendants in ``stats`` (pid -> (parent, seconds))."""
    if pid is None:
        return 0.0
    tree, total, frontier = {pid}, 0.0, [pid]
    while frontier:
        parent = frontier.pop()
        total += stats.get(parent, (0, 0.0))[1]
        children = [p for p, (pp, _) in stats.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return total


PROFILE = False  # --profile: py-spy samples the API process during every measured phase


def _profile(target: Target, seconds: float, raw: Path) -> subprocess.Popen[bytes] | None:
    if not PROFILE or target.api_pid is None:
        return None
    return subprocess.Popen(
        [
            _bin("py-spy"), "record", "--pid", str(target.api_pid), "--duration",
            str(int(seconds)), "--rate", "100", "--format", "raw", "--nonblocking",
            "--gil", "--output", str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _profile_summary(raw: Path, out: Path, top: int = 40) -> None:
    """Each function's share of the samples (inclusive, and where the sample was taken),
    while it held the GIL (py-spy --gil): where the CPU time of one endpoint goes."""
    if not raw.exists():
        return
    total = 0
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"# py-spy: {raw.name}, {total} samples holding the GIL", ""]
    for title, table in (("inclusive", inclusive), ("own", own)):
        lines += [f"## {title}", "", "| % | function |", "|---:|---|"]
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"| {100 * n / max(1, total):.1f} | `{name}` |")
        lines.append("")
    out.write_text("\n".join(lines))


def _setup_done(env: Environment, n_users: int) -> bool:
    """Every user has started and no setup request happened in the last second."""
    if env.runner is None or env.runner.user_count < n_users:
        return False
    setup = [e for (name, _), e in env.stats.entries.items() if name.startswith("setup: ")]
    last = max((e.last_request_timestamp or 0 for e in setup), default=0)
    return time.time() - last > 1.0


def _rows(env: Environment, statuses: dict[tuple[str, str], int]) -> list[Row]:
    rows = []
    for (name, _method), entry in sorted(env.stats.entries.items()):
        if name.startswith("setup: ") or not entry.num_requests:
            continue
        rows.append(
            Row(
                name=name,
                requests=entry.num_requests,
                failures=entry.num_failures,
                rps=entry.total_rps * (1 - entry.fail_ratio),
                p50=entry.get_response_time_percentile(0.5),
                p95=entry.get_response_time_percentile(0.95),
                p99=entry.get_response_time_percentile(0.99),
                max=entry.max_response_time,
                statuses={c: n for (nm, c), n in sorted(statuses.items()) if nm == name},
            )
        )
    return rows


# --- the two modes ---------------------------------------------------------------------------


def capacity_run(
    target: Target,
    levels: list[int],
    seconds: float,
    out: Path,
    endpoints: list[str] | None = None,
) -> dict[str, Any]:
    chosen = endpoints or [*capacity.READS, *capacity.WRITES]
    order = ["health", *chosen, "health"]
    result: dict[str, Any] = {"levels": {}}
    for n_users in levels:
        measured: dict[str, list[Row]] = {}
        for i, name in enumerate(order):
            os.environ["CDMO_LOAD_TARGET"] = name
            rows = run_phase(
                [capacity.CapacityUser], target, n_users, seconds, out, f"u{n_users}_{i}_{name}"
            )
            measured.setdefault(name, []).extend(rows)
            print(f"  {n_users:>4} users  {name:<14} " + _brief(rows), flush=True)
        baseline = sum(r.rps for r in measured["health"]) / max(1, len(measured["health"]))
        table = []
        for name in order[1:-1]:
            for row in measured[name]:
                table.append({**row.__dict__, "ratio": row.rps / baseline if baseline else 0})
        health = measured["health"]
        table.insert(
            0,
            {
                **health[0].__dict__,
                "requests": sum(r.requests for r in health),
                "failures": sum(r.failures for r in health),
                "rps": baseline,
                "p99": max(r.p99 for r in health),
                "max": max(r.max for r in health),
                "ratio": 1.0,
                "statuses": _merge(r.statuses for r in health),
                "cpu_ms": _mean([r.cpu_ms for r in health]),
                "cores": health[0].cores,
            },
        )
        result["levels"][str(n_users)] = table
    return result


def scenario_run(target: Target, levels: list[int], seconds: float, out: Path) -> dict[str, Any]:
    classes = [users.MakerUser, users.CdmoUser, users.OperatorUser]
    result: dict[str, Any] = {"levels": {}}
    for n_users in levels:
        rows = run_phase(classes, target, n_users, seconds, out, f"scenario_u{n_users}")
        result["levels"][str(n_users)] = [{**r.__dict__, "ratio": None} for r in rows]
        print(f"  {n_users:>4} users  " + _brief(rows), flush=True)
    return result


def _merge(dicts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _brief(rows: list[Row]) -> str:
    return "; ".join(
        f"{r.name}: {r.rps:.0f} req/s p50 {r.p50:.0f} p99 {r.p99:.0f} ms "
        + ("" if r.cpu_ms is None else f"cpu {r.cpu_ms:.2f} ms/req ")
        + str(r.statuses)
        for r in rows
    )


_CORES = ("api", "locust", "postgres", "machine")


def write_summary(result: dict[str, Any], out: Path) -> str:
    lines = [
        f"# Load test: {result['mode']}, {result['topology']}",
        "",
        f"{result['started']}; {result['seconds']} s measured per phase after setup; "
        f"machine: {os.cpu_count()} cores, shared with other work (load average at start "
        f"{result['load_average']}).",
        "",
    ]
    for level, table in result["levels"].items():
        lines += [
            f"## {level} users",
            "",
            "| endpoint | ok req/s | ratio to /health | p50 ms | p95 ms | p99 ms | max ms | "
            "API CPU ms/req | cores: API / Locust / PostgreSQL / machine | requests | "
            "failures | statuses |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for r in table:
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
            cpu = "" if r.get("cpu_ms") is None else f"{r['cpu_ms']:.2f}"
            cores = r.get("cores")
            shares = "" if not cores else " / ".join(f"{cores[k]:.2f}" for k in _CORES)
            statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
            lines.append(
                f"| {r['name']} | {r['rps']:.1f} | {ratio} | {r['p50']:.0f} | {r['p95']:.0f} | "
                f"{r['p99']:.0f} | {r['max']:.0f} | {cpu} | {shares} | {r['requests']} | "
                f"{r['failures']} | {statuses} |"
            )
        lines.append("")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["capacity", "scenario"])
    parser.add_argument("--users", type=int, nargs="+", default=None)
    parser.add_argument("--seconds", type=float, default=None, help="measured per phase")
    parser.add_argument("--processes", type=int, default=1, help="API processes to start")
    parser.add_argument("--base-url", help="load this deployment instead of starting one")
    parser.add_argument("--operator-key", default=os.environ.get("CDMO_OPERATOR_KEY"))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--endpoints",
        nargs="+",
        choices=[*capacity.READS, *capacity.WRITES],
        help="capacity mode: only these endpoints (default all; /health is always measured)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the API process with py-spy in every measured phase (1 process; "
        "<phase>_profile.md: each function's share of the samples)",
    )
    args = parser.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    levels = args.users or ([20, 100] if args.mode == "capacity" else [50])
    seconds = args.seconds or (15.0 if args.mode == "capacity" else 60.0)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "loadtests" / "results" / f"{stamp}_{args.mode}_p{args.processes}"
    out.mkdir(parents=True, exist_ok=True)
    if args.base_url:
        if not args.operator_key:
            parser.error("--base-url needs --operator-key (or CDMO_OPERATOR_KEY)")
        context: Any = contextlib.nullcontext(
            Target(args.base_url.rstrip("/"), args.operator_key, args.base_url)
        )
    else:
        if shutil.which(_bin("cdmo")) is None:
            parser.error("cdmo is not installed: run `make .venv/.installed-stamp` first")
        context = topology(args.processes, args.database_url, args.redis_url)
    with context as target:
        print(f"{args.mode}: {target.description}; results in {out}", flush=True)
        if args.mode == "capacity":
            result = capacity_run(target, levels, seconds, out, args.endpoints)
        else:
            result = scenario_run(target, levels, seconds, out)
    result.update(
        mode=args.mode,
        topology=target.description,
        started=stamp,
        seconds=seconds,
        load_average=" ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    print(write_summary(result, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
