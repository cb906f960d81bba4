"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel


class Health(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class WorkersSeen(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"engine": "dramatiq", "seen": 2, "window_s": 15.0}]}
    )

    engine: Literal["dramatiq", "local", "none"] = Field(
        description="dramatiq: `cdmo worker` processes on Redis; local: the API's own pool "
        "(no REDIS_URL), which counts as its workers."
    )
    seen: int | None = Field(
        description="Workers that beat within `window_s` (local: the pool's processes); "
        "null when the key-value store could not be read."
    )
    window_s: float


class Readiness(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "database": "postgresql",
                    "store": "redis",
                    "migrated": True,
                    "workers": {"engine": "dramatiq", "seen": 2, "window_s": 15.0},
                }
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    database: str
    store: str
    migrated: bool
    workers: WorkersSeen = Field(
        description="Informational: the API serves without workers (runs wait queued), so "
        "this never makes it unready."
    )
