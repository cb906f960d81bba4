"""First-run bootstrap: the operator organisation and its first API key (``cdmo seed``)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.api import OrganisationCreate, OrgKind
from service import repositories as repo
from service.db import Database

OPERATOR_NAME = "Marketplace operator"


@dataclass(frozen=True)
class SeedResult:
    org_id: str
    created_org: bool
    key_id: str | None
    key: str | None  # plaintext, shown once; None when an active key already existed


def seed_operator(db: Database, *, secret: str, new_key: bool = False) -> SeedResult:
    """Create the operator organisation if there is none, and a key unless one is active."""
    with db.session() as session:
        operator = repo.orgs.find_operator(session)
        created = operator is None
        if operator is None:
            operator = repo.orgs.create_org(
                session=session,
                org_in=OrganisationCreate(name=OPERATOR_NAME, kind=OrgKind.OPERATOR),
            )
        if repo.orgs.has_active_key(session, operator) and not new_key:
            session.commit()
            return SeedResult(operator.id, created, None, None)
        row, key = repo.orgs.create_api_key(
            session=session, org=operator, label="seed", secret=secret
        )
        session.commit()
        return SeedResult(operator.id, created, row.id, key)
