"""Match runs: the optimiser run as a job over (part of) the market, and what it produced."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from schemas.api.common import ApiModel, UniqueList, UtcDateTime
from schemas.market import (
    BlockReason,
    CapacityShortfall,
    DeviceCategory,
    Identifier,
    Region,
    Role,
    RunParams,
)

_SKIP_REASON = (
    "capacity changed at site site_demo_twincities_mn, process pcb_assembly, month 2027-02: "
    "needs 60 h, 20 h free now"
)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMMITTING = "committing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMMITTING})


class RunScope(ApiModel):
    """Which open projects the run places: all of them when every filter is empty; otherwise
    those matching every filter given (a category in ``categories``, a target market in
    ``markets``, an id in ``project_ids``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"categories": ["ivd"], "markets": ["EU"], "project_ids": []}]
        }
    )

    categories: UniqueList[DeviceCategory] = Field(default_factory=list, max_length=20)
    markets: UniqueList[Region] = Field(default_factory=list, max_length=10)
    project_ids: UniqueList[Identifier] = Field(default_factory=list, max_length=10_000)


class RunCreate(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "scope": {"categories": ["implantable_interventional"]},
                    "params": {"time_limit_s": 10, "seed": 1},
                    "dry_run": False,
                }
            ]
        }
    )

    scope: RunScope = Field(default_factory=RunScope)
    params: RunParams = Field(default_factory=RunParams)
    dry_run: bool = Field(
        default=False, description="Compute and keep the answer, but make no proposal."
    )


class RunProgress(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "phase": "solve",
                    "elapsed_s": 4.2,
                    "objective": 118000.0,
                    "bound": 121000.0,
                    "gap": 0.0248,
                    "placed": 11,
                }
            ]
        }
    )

    phase: str
    elapsed_s: float
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    placed: int | None = None


class SkippedPlacement(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": "prj_demo_ai_ecg",
                    "site_id": "site_demo_twincities_mn",
                    "role": "primary",
                    "reason": _SKIP_REASON,
                }
            ]
        }
    )

    project_id: str
    site_id: str
    role: Role
    reason: str = Field(description='e.g. "capacity changed at site X, month M".')


_COMMIT_EXAMPLE: JsonDict = {
    "proposed": 9,
    "unchanged": 1,
    "superseded": 0,
    "skipped": [
        {
            "project_id": "prj_demo_ai_ecg",
            "site_id": "site_demo_twincities_mn",
            "role": "primary",
            "reason": _SKIP_REASON,
        }
    ],
    "market_version": 57,
}


class CommitSummary(ApiModel):
    """What the commit of a succeeded, non-dry run did to the market."""

    model_config = ConfigDict(json_schema_extra={"examples": [_COMMIT_EXAMPLE]})

    proposed: int = Field(description="New proposals made (superseding moved ones).")
    unchanged: int = Field(description="Placements already proposed at the same site.")
    superseded: int = Field(description="Earlier proposals replaced by a move.")
    skipped: list[SkippedPlacement] = Field(
        default_factory=list, description="Placements that no longer fit, with the reason."
    )
    market_version: int | None = Field(default=None, description="Market version after it.")


class RunSummary(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "feasible",
                    "objective": 118500.0,
                    "bound": 119200.0,
                    "gap": 0.0059,
                    "partial": False,
                    "projects": 11,
                    "placed": 10,
                    "unplaced": 1,
                    "unplaced_by_reason": {"no_site_in_market": 1},
                    "timings": {"snapshot": 0.05, "solve": 10.1, "persist": 0.02, "commit": 0.04},
                    "result_hash": "9f2c0d6e",
                    "replay_identical": None,
                    "notes": [],
                    "commit": _COMMIT_EXAMPLE,
                }
            ]
        }
    )

    status: str = Field(description="The solver's status: optimal, feasible, ...")
    objective: float
    bound: float
    gap: float
    partial: bool = Field(description="Stopped by a cancel: the best verified answer so far.")
    projects: int = Field(description="Projects in the run's scope.")
    placed: int
    unplaced: int
    unplaced_by_reason: dict[str, int]
    timings: dict[str, float] = Field(
        description="Seconds per phase: snapshot, solve (and the matcher's own), persist, commit."
    )
    result_hash: str = Field(description="SHA-256 of the canonical assignments.")
    replay_identical: bool | None = Field(
        default=None, description="For a replay: same assignments and objective as the original."
    )
    notes: list[str] = Field(default_factory=list)
    commit: CommitSummary | None = None


class RunAudit(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "snapshot_hash": "4b1f0c2a",
                    "snapshot_bytes": 5120,
                    "snapshot_pruned": False,
                    "versions": {
                        "matcher": "0.1.0",
                        "ortools": "9.12",
                        "numba": "0.61.0",
                        "numpy": "2.2.0",
                        "python": "3.11.7",
                    },
                }
            ]
        }
    )

    snapshot_hash: str | None = Field(description="SHA-256 of the snapshot's canonical JSON.")
    snapshot_bytes: int | None = Field(description="Compressed size of the stored snapshot.")
    snapshot_pruned: bool
    versions: dict[str, str] = Field(description="matcher, ortools, numba, numpy, python.")


class RunPublic(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "run_01JD8QF6G7H8J9K0M1N2P3Q4R5",
                    "status": "running",
                    "dry_run": False,
                    "scope": {"categories": [], "markets": [], "project_ids": []},
                    "params": {"time_limit_s": 30, "seed": 0},
                    "market_version": 1842,
                    "progress": {
                        "phase": "solve",
                        "elapsed_s": 4.2,
                        "objective": 118000.0,
                        "bound": 121000.0,
                        "gap": 0.0248,
                        "placed": 11,
                    },
                    "summary": None,
                    "error": None,
                    "attempts": 1,
                    "replay_of": None,
                    "created_by": "org_demo_operator",
                    "created_at": "2026-12-01T08:00:00Z",
                    "started_at": "2026-12-01T08:00:01Z",
                    "finished_at": None,
                    "heartbeat_at": "2026-12-01T08:00:05Z",
                    "cancel_requested": False,
                    "queue_position": None,
                }
            ]
        }
    )

    id: str
    status: RunStatus
    dry_run: bool
    scope: RunScope
    params: RunParams
    market_version: int | None = Field(description="Version of the snapshot solved.")
    progress: RunProgress | None
    summary: RunSummary | None
    error: str | None
    attempts: int
    replay_of: str | None
    created_by: str
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    heartbeat_at: UtcDateTime | None
    cancel_requested: bool
    queue_position: int | None = Field(
        default=None, description="While queued: runs ahead of this one (0 = next)."
    )
    audit: RunAudit | None = None


class RunAssignment(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": "prj_demo_dcb_catheter",
                    "site_id": "site_demo_suzhou_budapest",
                    "cdmo_id": "org_demo_cdmo_suzhou",
                    "role": "primary",
                    "share": 1.0,
                    "value": 15250.0,
                    "cost": 98000.0,
                    "outcome": "proposed",
                    "detail": None,
                }
            ]
        }
    )

    project_id: str
    site_id: str
    cdmo_id: str
    role: Role
    share: float
    value: float
    cost: float
    outcome: str | None = Field(
        description="After the commit: proposed, unchanged or skipped; null before/dry run."
    )
    detail: str | None = None


class RunUnassigned(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": "prj_demo_ct_gantry",
                    "reason": "capacity",
                    "detail": "short of pcb_assembly capacity at its best sites",
                    "shortfalls": [
                        {
                            "site_id": "site_demo_meditron_sz",
                            "process": "pcb_assembly",
                            "month": "2027-03",
                            "short_hours": 40.0,
                        }
                    ],
                }
            ]
        }
    )

    project_id: str
    reason: BlockReason
    detail: str
    shortfalls: list[CapacityShortfall]


class RunEvent(ApiModel):
    """One server-sent event's data: ``progress`` while solving, ``status`` on a change,
    ``final`` (the whole run) last."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "progress",
                    "data": {"phase": "solve", "elapsed_s": 4.2, "objective": 118000.0},
                }
            ]
        }
    )

    kind: str
    data: dict[str, Any]


class CdmoPlacements(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"cdmo_id": "org_demo_cdmo_suzhou", "primary": 2, "second_source": 1, "value": 3e4}
            ]
        }
    )

    cdmo_id: str
    primary: int = Field(description="Projects placed at this CDMO's sites as primary.")
    second_source: int = Field(description="Projects with their second source here.")
    value: float = Field(description="Objective contribution of these placements.")


class RunPlacementsByCdmo(ApiModel):
    """A run's placements per CDMO (the dashboard's chart), most primary placements first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "run_id": "run_01JD8QF6G7H8J9K0M1N2P3Q4R5",
                    "items": [
                        {
                            "cdmo_id": "org_demo_cdmo_suzhou",
                            "primary": 2,
                            "second_source": 1,
                            "value": 30500.0,
                        }
                    ],
                }
            ]
        }
    )

    run_id: str
    items: list[CdmoPlacements]
