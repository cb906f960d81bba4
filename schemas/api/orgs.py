"""Organisations (makers, CDMOs, operators) and their API keys."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel, OrgKind, UtcDateTime

_ORG_EXAMPLE: dict[str, Any] = {
    "id": "org_01JD8Q4T5M6N7P8Q9R0S1T2V3W",
    "name": "Suzhou Precision Medical CDMO",
    "kind": "cdmo",
    "country": "CN",
    "created_at": "2026-11-02T09:30:00Z",
}


class OrganisationBase(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    kind: OrgKind
    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="Home country, ISO 3166-1 alpha-2."
    )


class OrganisationCreate(OrganisationBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Suzhou Precision Medical CDMO", "kind": "cdmo", "country": "CN"}]
        }
    )


class OrganisationPublic(OrganisationBase):
    model_config = ConfigDict(json_schema_extra={"examples": [_ORG_EXAMPLE]})

    id: str
    created_at: UtcDateTime


class CdmoDirectoryEntry(ApiModel):
    """What every participant may know about a CDMO: enough to exclude it from a project."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": _ORG_EXAMPLE["id"], "name": _ORG_EXAMPLE["name"], "country": "CN"}]
        }
    )

    id: str
    name: str
    country: str | None


_KEY_EXAMPLE: dict[str, Any] = {
    "id": "key_01JD8Q6A7B8C9D0E1F2G3H4J5K",
    "org_id": _ORG_EXAMPLE["id"],
    "label": "capacity sync job",
    "prefix": "ck_Xb3T9kPq",
    "created_at": "2026-11-02T09:31:00Z",
    "revoked_at": None,
}


class ApiKeyCreate(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"label": "capacity sync job"}]})

    label: str = Field(default="", max_length=100)


class ApiKeyPublic(ApiModel):
    """An API key as listed later: the secret itself is never shown again."""

    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})

    id: str
    org_id: str
    label: str
    prefix: str = Field(description="First characters of the key, to recognise it.")
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None


class ApiKeyCreated(ApiKeyPublic):
    """The response to key creation: the only time the secret is shown."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_KEY_EXAMPLE, "key": "ck_Xb3T9kPqZ2m7Lr0VwYc8HnE4sJ6uAa1Dk5Fg9Qe3Ti"}]
        }
    )

    key: str = Field(description="Send as `Authorization: Bearer <key>`. Shown once.")
