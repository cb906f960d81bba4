"""A real API process under overload, crashes and failing dependencies (PostgreSQL + Redis).

Each test starts its own uvicorn process on its own database; the Redis fault test starts
its own redis-server, and the PostgreSQL fault test puts a TCP proxy of its own between the
API and PostgreSQL. Nothing shared is stopped. After each, `cdmo check` must pass.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_kit import Server, cdmo_check, free_port, migrate_and_seed, running, server_env
from service_testkit import PgAdmin, project_body
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.usefixtures("pg_admin")


def _new_env(pg_admin: PgAdmin, redis_url: str | None, **settings: object) -> dict[str, str]:
    return server_env(pg_admin.create_database("srv"), redis_url, **settings)


def _maker_key(server: Server, operator_key: str) -> str:
    with server.client(operator_key) as op:
        org = op.post("/v1/orgs", json={"name": f"m {uuid.uuid4().hex[:8]}", "kind": "maker"})
        assert org.status_code == 201, org.text
        key = op.post(f"/v1/orgs/{org.json()['id']}/keys", json={"label": "t"})
        assert key.status_code == 201, key.text
        return str(key.json()["key"])


def _count_projects(env: dict[str, str]) -> int:
    engine = create_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM projects")).scalar_one())
    finally:
        engine.dispose()


def _assert_invariants(env: dict[str, str]) -> None:
    assert cdmo_check(env) == []


class MarketLock:
    """Holds the market_state row lock, so every market write waits inside its transaction
    (holding its request slot and its connection) until :meth:`release`."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)
        self.conn = self.engine.connect()
        self.conn.execute(text("SELECT version FROM market_state FOR UPDATE"))

    def waiting(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                ).scalar_one()
            )

    def wait_for(self, n: int, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while self.waiting() < n:
            assert time.monotonic() < deadline, f"fewer than {n} requests reached the lock"
            time.sleep(0.05)

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()
        self.engine.dispose()


def _post_in_thread(server: Server, key: str, out: list[object], **kw: object) -> threading.Thread:
    def post() -> None:
        try:
            with server.client(key, timeout=30) as c:
                out.append(c.post("/v1/projects", json=project_body(), **kw))  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            out.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_overload_is_answered_503_with_retry_after_and_recovers_at_once(
    pg_admin: PgAdmin, redis_url: str
) -> None:
    env = _new_env(pg_admin, redis_url, DB__REQUEST_SLOTS=2, DB__QUEUE_TIMEOUT_S=0.3)
    operator = migrate_and_seed(env)
    with running(Server(env)) as server:
        maker = _maker_key(server, operator)
        lock = MarketLock(env["DATABASE_URL"])
        results: list[object] = []
        try:
            threads = [_post_in_thread(server, maker, results) for _ in range(2)]
            lock.wait_for(2)  # both slots are held by requests stuck in their transactions
            with server.client(maker) as c:
                started = time.monotonic()
                shed = c.get("/v1/projects")
                assert time.monotonic() - started < 3
                assert shed.status_code == 503, shed.text
                assert shed.headers["retry-after"] == "1"
                assert shed.json()["type"] == "/problems/service-unavailable"
                assert c.get("/health", timeout=2).status_code == 200
                assert c.get("/ready", timeout=3).status_code == 200
        finally:
            lock.release()
        for t in threads:
            t.join(timeout=30)
        assert [getattr(r, "status_code", r) for r in results] == [201, 201]
        with server.client(maker) as c:
            assert c.get("/v1/projects", timeout=3).status_code == 200  # back at once
    assert _count_projects(env) == 2
    _assert_invariants(env)


def test_a_body_that_never_arrives_gets_408_and_writes_nothing(
    pg_admin: PgAdmin, redis_url: str
) -> None:
    env = _new_env(pg_admin, redis_url, HTTP__BODY_TIMEOUT_S=1)
    operator = migrate_and_seed(env)
    with running(Server(env)) as server:
        maker = _maker_key(server, operator)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {maker}\r\nContent-Length: 500\r\n\r\n".encode()
                + b'{"title": "slow'
            )
            started = time.monotonic()
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert time.monotonic() - started < 8
    assert _count_projects(env) == 0


def test_a_crash_at_any_point_then_retries_yield_exactly_one_resource_each(
    pg_admin: PgAdmin, redis_url: str
) -> None:
    """kill -9 of the API (1) while a POST is inside its transaction, (2) right after a POST
    committed, (3) in the middle of a stream of POSTs; the client then retries every request
    whose answer it did not get, with the same Idempotency-Key."""
    env = _new_env(pg_admin, redis_url)
    operator = migrate_and_seed(env)
    server = Server(env)
    server.start()
    try:
        maker = _maker_key(server, operator)
        # (1) inside the transaction (waiting for the market lock): either nothing remains or
        # the whole write does, key and answer included (a one-statement write commits when
        # the lock is released unless PostgreSQL saw the socket gone first); either way the
        # retry yields exactly one project
        lock = MarketLock(env["DATABASE_URL"])
        results: list[object] = []
        thread = _post_in_thread(server, maker, results, headers={"Idempotency-Key": "k1"})
        lock.wait_for(1)
        server.kill()
        lock.release()
        thread.join(timeout=30)
        assert isinstance(results[0], httpx.HTTPError)
        server.start()
        with server.client(maker) as c:
            time.sleep(0.5)  # the orphaned transaction ends when PostgreSQL sees the socket gone
            assert _count_projects(env) <= 1
            first = c.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "k1"})
            again = c.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "k1"})
            assert first.status_code == again.status_code == 201
            assert again.json()["id"] == first.json()["id"]
            assert again.headers["idempotent-replayed"] == "true"
            assert _count_projects(env) == 1
            # (2) right after the commit: the retry gets the first answer
            body = project_body()
            done = c.post("/v1/projects", json=body, headers={"Idempotency-Key": "k2"})
            assert done.status_code == 201
        server.kill()
        server.start()
        with server.client(maker) as c:
            replay = c.post("/v1/projects", json=body, headers={"Idempotency-Key": "k2"})
            assert replay.json() == done.json() and replay.headers["idempotent-replayed"]
        assert _count_projects(env) == 2
        # (3) killed mid-stream, by another thread, while requests are in flight
        answered: dict[str, str] = {}
        keys = [f"s{i}" for i in range(40)]
        bodies = {k: project_body(title=f"stream {k}") for k in keys}

        def stream() -> None:
            with server.client(maker, timeout=10) as c:
                for k in keys:
                    try:
                        r = c.post("/v1/projects", json=bodies[k], headers={"Idempotency-Key": k})
                        if r.status_code == 201:
                            answered[k] = r.json()["id"]
                    except httpx.HTTPError:
                        return

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        deadline = time.monotonic() + 20
        while len(answered) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()
        streamer.join(timeout=30)
        assert 5 <= len(answered) < len(keys)
        server.start()
        with server.client(maker) as c:
            for k in keys:  # the client retries everything it is not sure about
                r = c.post("/v1/projects", json=bodies[k], headers={"Idempotency-Key": k})
                assert r.status_code == 201, r.text
                if k in answered:
                    assert r.json()["id"] == answered[k]
        assert _count_projects(env) == 2 + len(keys)
    finally:
        server.kill()
    _assert_invariants(env)


# --- dependencies failing ---------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, callable]]:  # type: ignore[valid-type]
    """A redis-server of this test's own (never the shared one), restartable on its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [binary, "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path), "--bind", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("own redis-server did not start")

    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", (start, stop)  # type: ignore[misc]
    finally:
        stop()


class Load:
    """Reads and idempotent writes from two threads, recording every status."""

    def __init__(self, server: Server, key: str) -> None:
        self.server, self.key = server, key
        self.statuses: list[int | str] = []
        self.created: dict[str, str] = {}
        self.attempted: dict[str, dict[str, object]] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in (0, 1)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def retry_unanswered(self) -> None:
        """What a client does after an outage: retry every POST it got no 201 for."""
        with self.server.client(self.key, timeout=10) as c:
            for k, body in self.attempted.items():
                if k not in self.created:
                    r = c.post("/v1/projects", json=body, headers={"Idempotency-Key": k})
                    assert r.status_code == 201, r.text
                    self.created[k] = r.json()["id"]

    def _run(self, n: int) -> None:
        i = 0
        with self.server.client(self.key, timeout=10) as c:
            while not self._stop.is_set() and i < 5000:
                i += 1
                try:
                    if i % 3 == 0:
                        k = f"load-{n}-{i}"
                        body = self.attempted[k] = project_body()
                        r = c.post("/v1/projects", json=body, headers={"Idempotency-Key": k})
                        if r.status_code == 201:
                            self.created[k] = r.json()["id"]
                    else:
                        r = c.get("/v1/projects?limit=5")
                    self.statuses.append(r.status_code)
                    if r.status_code == 503:
                        assert r.headers.get("retry-after"), r.headers
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)
                time.sleep(0.01)


def _ready(server: Server) -> tuple[int, dict[str, object]]:
    r = httpx.get(f"{server.url}/ready", timeout=5)
    return r.status_code, r.json()


def _wait_until(predicate, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what} not within {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_redis_restarted_during_load(pg_admin: PgAdmin, own_redis) -> None:  # type: ignore[no-untyped-def]
    """Redis holds only rate-limit counters and revocation broadcasts: while it is down the
    API keeps answering (rate limits fail open), /ready says so, and it recovers by itself."""
    url, (start, stop) = own_redis
    env = _new_env(pg_admin, url)
    operator = migrate_and_seed(env)
    with running(Server(env)) as server:
        maker = _maker_key(server, operator)
        with Load(server, maker) as load:
            time.sleep(1)
            stop()
            _wait_until(lambda: _ready(server)[0] == 503, 10, "/ready reporting Redis down")
            assert _ready(server)[1]["store"] == "unreachable"
            time.sleep(2)
            start()
            recovered = _wait_until(lambda: _ready(server)[0] == 200, 15, "/ready recovering")
            time.sleep(1)
        assert 500 not in load.statuses and load.statuses.count(200) > 10, load.statuses
        load.retry_unanswered()
    print(f"redis restart: /ready recovered {recovered:.1f} s after redis came back")
    assert _count_projects(env) == len(load.created)
    _assert_invariants(env)


class TcpProxy:
    """127.0.0.1:<port> -> PostgreSQL; :meth:`refuse` closes the listener and every proxied
    connection (connections are refused), :meth:`accept` opens it again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.accept()

    def accept(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._serve, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns.clear()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_postgresql_refusing_connections_for_a_few_seconds(
    pg_admin: PgAdmin, redis_url: str
) -> None:
    direct = pg_admin.create_database("srvpg")
    from sqlalchemy.engine import make_url

    parsed = make_url(direct)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = server_env(proxied, redis_url)
    operator = migrate_and_seed(env)
    with running(Server(env)) as server:
        maker = _maker_key(server, operator)
        with Load(server, maker) as load:
            time.sleep(1)
            proxy.refuse()
            _wait_until(lambda: _ready(server)[0] == 503, 10, "/ready reporting the database")
            assert _ready(server)[1]["database"] == "unreachable"
            assert httpx.get(f"{server.url}/health", timeout=2).status_code == 200
            time.sleep(3)
            down = list(load.statuses)
            proxy.accept()
            back = _wait_until(lambda: _ready(server)[0] == 200, 15, "/ready recovering")
            n = len(load.statuses)
            _wait_until(lambda: 200 in load.statuses[n:], 10, "requests succeeding again")
        assert 503 in down, down
        assert 500 not in load.statuses, load.statuses
        load.retry_unanswered()
    print(f"postgresql refusing: /ready recovered {back:.1f} s after it accepted again")
    env_direct = {**env, "DATABASE_URL": direct}
    assert _count_projects(env_direct) == len(load.created)
    _assert_invariants(env_direct)
    proxy.refuse()
