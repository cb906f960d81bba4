"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict

from schemas.api.common import ApiModel


class Health(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class Readiness(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "database": "postgresql", "store": "redis", "migrated": True}
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    database: str
    store: str
    migrated: bool
