"""Who is calling: an API key resolved to its organisation (a *principal*)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from schemas.api import OrgKind
from service.models import ApiKey, Organisation
from service.security import hash_api_key


@dataclass(frozen=True)
class Principal:
    org_id: str
    kind: OrgKind
    key_id: str

    @property
    def is_operator(self) -> bool:
        return self.kind == OrgKind.OPERATOR

    @property
    def is_maker(self) -> bool:
        return self.kind == OrgKind.MAKER

    @property
    def is_cdmo(self) -> bool:
        return self.kind == OrgKind.CDMO


def authenticate(session: Session, key: str, secret: str) -> Principal | None:
    """The principal of an active key, or None. One indexed lookup by the key's HMAC."""
    if len(key) > 200:
        return None
    stmt = (
        select(ApiKey.id, Organisation.id, Organisation.kind)
        .join(Organisation, Organisation.id == ApiKey.org_id)  # type: ignore[arg-type]
        .where(ApiKey.key_hash == hash_api_key(key, secret))
        .where(ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
    )
    row = session.exec(stmt).first()
    if row is None:
        return None
    key_id, org_id, kind = row
    return Principal(org_id=org_id, kind=OrgKind(kind), key_id=key_id)
