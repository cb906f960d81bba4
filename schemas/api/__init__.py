"""Wire models of the HTTP API, one module per resource (``XBase -> XCreate/XUpdate/XPublic``).

Domain enums and nested value objects come from :mod:`schemas.market`, so the API and the
matcher speak the same language. Leaf package: imports nothing of ours but ``schemas``.
"""

from schemas.api.common import (
    ACTIVE_PROPOSAL_STATUSES,
    ApiModel,
    FieldError,
    OrgKind,
    Page,
    Problem,
    ProjectStatus,
    ProposalStatus,
)
from schemas.api.health import Health, Readiness
from schemas.api.listings import ListingCreate, ListingPublic, ListingUpdate, ListingValues
from schemas.api.orgs import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    CdmoDirectoryEntry,
    OrganisationCreate,
    OrganisationPublic,
)
from schemas.api.projects import (
    ProjectCreate,
    ProjectFields,
    ProjectPublic,
    ProjectRedacted,
    ProjectUpdate,
    ProjectView,
)
from schemas.api.proposals import MarketVersion, ProposalCreate, ProposalDecision, ProposalPublic
from schemas.api.runs import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    CommitSummary,
    RunAssignment,
    RunAudit,
    RunCreate,
    RunEvent,
    RunProgress,
    RunPublic,
    RunScope,
    RunStatus,
    RunSummary,
    RunUnassigned,
    SkippedPlacement,
)
from schemas.api.sites import SiteBase, SiteCreate, SitePublic, SiteUpdate

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "FINAL_RUN_STATUSES",
    "CommitSummary",
    "RunAssignment",
    "RunAudit",
    "RunCreate",
    "RunEvent",
    "RunProgress",
    "RunPublic",
    "RunScope",
    "RunStatus",
    "RunSummary",
    "RunUnassigned",
    "SkippedPlacement",
    "ACTIVE_PROPOSAL_STATUSES",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "ApiModel",
    "CdmoDirectoryEntry",
    "FieldError",
    "Health",
    "ListingCreate",
    "ListingPublic",
    "ListingUpdate",
    "ListingValues",
    "MarketVersion",
    "OrgKind",
    "OrganisationCreate",
    "OrganisationPublic",
    "Page",
    "Problem",
    "ProjectCreate",
    "ProjectFields",
    "ProjectPublic",
    "ProjectRedacted",
    "ProjectStatus",
    "ProjectUpdate",
    "ProjectView",
    "ProposalCreate",
    "ProposalDecision",
    "ProposalPublic",
    "ProposalStatus",
    "Readiness",
    "SiteBase",
    "SiteCreate",
    "SitePublic",
    "SiteUpdate",
]
