"""All configuration, read from the environment once, through :func:`get_settings`.

``DATABASE_URL`` and ``REDIS_URL`` keep their conventional names; everything else is
``CDMO_<SECTION>__<FIELD>`` (e.g. ``CDMO_RATE_LIMIT__REQUESTS=1200``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_HMAC_SECRET = "dev-only-insecure-hmac-secret-change-me"


class DatabaseSettings(BaseModel):
    echo: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    pool_timeout_s: float = Field(
        default=2.0, gt=0, description="Wait for a pooled connection (a backstop: see slots)."
    )
    request_slots: int = Field(
        default=8,
        ge=1,
        le=400,
        description="Requests working on the database at once per process (at most "
        "pool_size + max_overflow): beyond what keeps the CPU busy, more only adds latency.",
    )
    queue_timeout_s: float = Field(
        default=0.5, gt=0, description="Wait for a request slot before answering 503."
    )
    queue_budget_s: float = Field(
        default=0.0,
        ge=0,
        description="Adaptive admission: answer 503 at once when the wait expected for a "
        "slot exceeds this (0, the default: off, always wait up to queue_timeout_s). The "
        "deployments set 0.03: at 100 closed-loop users it kept p99 at 74-100 ms with 1-5 % "
        "shed, and shed nothing at 20 (README 'Under load', 'Tails').",
    )
    connect_timeout_s: int = Field(default=2, ge=1, le=60)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)


class RedisSettings(BaseModel):
    key_prefix: str = Field(default="cdmo:", max_length=100)
    socket_timeout_s: float = Field(default=2.0, gt=0)


class AuthSettings(BaseModel):
    hmac_secret: SecretStr = Field(
        default=SecretStr(DEV_HMAC_SECRET),
        description="Key of the HMAC-SHA-256 under which API keys are stored. At least 32 chars.",
    )
    cache_ttl_s: float = Field(
        default=10.0,
        ge=0,
        description="How long a process trusts a resolved API key; the longest a revoked key "
        "can still be accepted when the revocation broadcast (Redis) is lost.",
    )


class RateLimitSettings(BaseModel):
    enabled: bool = True
    requests: int = Field(default=600, ge=1, description="Requests per window per API key.")
    window_s: int = Field(default=60, ge=1, le=86_400)


class IdempotencySettings(BaseModel):
    ttl_s: int = Field(default=86_400, ge=1, description="How long a POST's response is kept.")


class HttpSettings(BaseModel):
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger bodies get 413.")
    body_timeout_s: float = Field(
        default=10.0, gt=0, description="The whole body must arrive within this time, or 408."
    )
    expose_metrics: bool = Field(default=True, description="Serve Prometheus text at /metrics.")
    lean_path: bool = Field(
        default=True,
        description="PostgreSQL: answer the hottest requests on the lean path (service.hotpath, "
        "README 'The lean path'): ~2x fewer CPU per read than routing, dependencies and the "
        "middleware stack. Off: every request takes the usual path. SQLite: always off.",
    )
    gil_switch_interval_s: float = Field(
        default=0.0005,
        gt=0,
        le=0.1,
        description="sys.setswitchinterval for an API process: a request thread back from the "
        "database waits at most this long for the GIL while the event loop is busy (Python's "
        "default, 5 ms, made every request queue behind the loop under load).",
    )


class RunsSettings(BaseModel):
    """Match runs: limits, heartbeats and the reaper (see README, "Match runs")."""

    max_time_limit_s: float = Field(default=600.0, gt=0, le=3600, description="Longest solve.")
    max_active_runs: int = Field(
        default=4, ge=1, le=1000, description="Runs queued or running at once, per deployment."
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0, le=60)
    heartbeat_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="A running run silent this long is reaped. The heartbeat comes from a "
        "process of its own (a solver holding the GIL cannot delay it), so this only has to "
        "cover database and scheduling hiccups.",
    )
    cancel_poll_s: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="How often the heartbeat process reads the cancel flag.",
    )
    worker_stall_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="A worker alive but silent this long (stuck) has its runs' heartbeats "
        "stopped, so they are reaped.",
    )
    requeue_after_s: float = Field(
        default=30.0, gt=0, le=3600, description="A queued run untouched this long is re-sent."
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="Then a reaped run fails.")
    reaper_interval_s: float = Field(default=5.0, gt=0, le=3600)
    local_workers: int = Field(
        default=1, ge=1, le=64, description="Embedded mode: processes of the local pool."
    )
    worker_seen_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="/ready counts a worker seen when it beat within this window (workers "
        "beat every second; 15 s rides out a busy machine without hiding a dead worker long).",
    )
    queue_name: str = Field(default="match_runs", max_length=100)
    snapshot_keep_days: int = Field(default=90, ge=1, description="`cdmo runs prune` default.")
    commit_delay_s: float = Field(
        default=0.0, ge=0, le=600, description="Fault injection for tests: pause before commit."
    )


class DealsSettings(BaseModel):
    """Proposal lifecycle (see README, "Deals")."""

    proposal_ttl_s: float = Field(
        default=7 * 86_400,
        gt=0,
        description="A proposed (or accepted, unconfirmed) proposal not acted on this long "
        "expires.",
    )
    expiry_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="How often the expiry sweep runs."
    )


class NotificationSettings(BaseModel):
    """Webhook delivery (see README, "Notifications")."""

    enabled: bool = Field(default=True, description="Run a deliverer in this process.")
    max_attempts: int = Field(default=6, ge=1, le=30)
    backoff_base_s: float = Field(
        default=2.0, gt=0, le=3600, description="Attempt n waits base x 2^(n-1) after failing."
    )
    backoff_max_s: float = Field(default=3600.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Per delivery attempt.")
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Due retries are looked for at least this often."
    )
    stream_maxlen: int = Field(default=100_000, ge=100, description="Redis stream length cap.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CDMO_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    env: Literal["development", "test", "production"] = "development"
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CDMO_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; unset means the embedded SQLite file under data_dir.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "CDMO_REDIS_URL", "redis_url"),
        description="Unset means an in-process store (single process only).",
    )
    data_dir: Path = Path("var")
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = Field(
        default="console", description="json: one JSON object per line (production)."
    )
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    runs: RunsSettings = Field(default_factory=RunsSettings)
    deals: DealsSettings = Field(default_factory=DealsSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        secret = self.auth.hmac_secret.get_secret_value()
        if self.env == "production":
            problems = []
            if secret == DEV_HMAC_SECRET or len(secret) < 32:
                problems.append("CDMO_AUTH__HMAC_SECRET must be set to 32+ random characters")
            if not self.database_url or self.database_url.startswith("sqlite"):
                problems.append("DATABASE_URL must point at PostgreSQL")
            if not self.redis_url:
                problems.append("REDIS_URL must be set (idempotency and rate limits are shared)")
            if problems:
                raise ValueError("unsafe production configuration: " + "; ".join(problems))
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{self.data_dir / 'cdmo.db'}"


def normalise_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean PostgreSQL through psycopg 3 here."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
