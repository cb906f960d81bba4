"""Organisations and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from schemas.api import ApiKeyPublic, OrganisationCreate, OrganisationPublic, OrgKind
from service.auth import Principal
from service.errors import ConflictError, InvalidFieldError, NotFoundError, PermissionDeniedError
from service.ids import new_id
from service.models import ApiKey, Organisation, utcnow
from service.pagination import PageParams, paginate
from service.security import display_prefix, generate_api_key, hash_api_key


def to_public(org: Organisation) -> OrganisationPublic:
    return OrganisationPublic.model_validate(org, from_attributes=True)


def key_to_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(key, from_attributes=True)


def create_org(
    *, session: Session, org_in: OrganisationCreate, org_id: str | None = None
) -> Organisation:
    existing = session.exec(select(Organisation).where(Organisation.name == org_in.name)).first()
    if existing is not None:
        raise ConflictError(f"an organisation named {org_in.name!r} already exists")
    org = Organisation(id=org_id or new_id("org"), **org_in.model_dump(mode="json"))
    session.add(org)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create with the same name
        raise ConflictError(f"an organisation named {org_in.name!r} already exists") from exc
    return org


def get_org(*, session: Session, principal: Principal, org_id: str) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or not (principal.is_operator or principal.org_id == org_id):
        raise NotFoundError(f"organisation {org_id} not found")
    return org


def list_orgs(
    *, session: Session, principal: Principal, kind: OrgKind | None, page: PageParams
) -> tuple[Sequence[Organisation], str | None]:
    stmt = select(Organisation)
    if not principal.is_operator:
        stmt = stmt.where(Organisation.id == principal.org_id)
    if kind is not None:
        stmt = stmt.where(Organisation.kind == kind.value)
    rows, cursor = paginate(session, stmt, Organisation.id, page)
    return [r[0] for r in rows], cursor


def list_cdmos(*, session: Session, page: PageParams) -> tuple[Sequence[Organisation], str | None]:
    stmt = select(Organisation).where(Organisation.kind == OrgKind.CDMO.value)
    rows, cursor = paginate(session, stmt, Organisation.id, page)
    return [r[0] for r in rows], cursor


def require_org_of_kind(session: Session, org_id: str, kind: OrgKind, field: str) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or org.kind != kind.value:
        raise InvalidFieldError(
            field, f"{org_id} is not a {kind.value} organisation", code="unknown_reference"
        )
    return org


@dataclass(frozen=True)
class Ownership:
    """Who owns a new resource: an organisation of ``kind``, named by operators in
    ``field``; ``owner`` and ``things`` name the kind and the resource in messages."""

    kind: OrgKind
    field: str
    owner: str
    things: str


MAKER_OWNS_PROJECTS = Ownership(OrgKind.MAKER, "maker_id", "maker", "projects")
CDMO_OWNS_SITES = Ownership(OrgKind.CDMO, "cdmo_id", "CDMO", "sites")


def owning_org(
    session: Session, principal: Principal, requested_id: str | None, rule: Ownership
) -> str:
    """The id of the organisation that will own a new resource: operators must name it in
    ``rule.field``; others create only for themselves and must be of ``rule.kind``."""
    org_id, named = requested_owner(principal, requested_id, rule)
    if named:
        require_org_of_kind(session, org_id, rule.kind, rule.field)
    return org_id


def requested_owner(
    principal: Principal, requested_id: str | None, rule: Ownership
) -> tuple[str, bool]:
    """:func:`owning_org` before its database check: the owner's id, and whether it was named
    by an operator (then it must still be shown to be an organisation of ``rule.kind``)."""
    if principal.is_operator:
        if requested_id is None:
            raise InvalidFieldError(
                rule.field, f"operators must name the owning {rule.owner}", code="missing"
            )
        return requested_id, True
    if principal.kind != rule.kind:
        raise PermissionDeniedError(f"only {rule.owner}s and operators may create {rule.things}")
    if requested_id is not None and requested_id != principal.org_id:
        raise PermissionDeniedError(f"a {rule.owner} may only create {rule.things} of its own")
    return principal.org_id, False


def create_api_key(
    *,
    session: Session,
    org: Organisation,
    label: str,
    secret: str,
    key: str | None = None,
    key_id: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for ``org``: the row (hash only) and the plaintext, to show once."""
    plaintext = key or generate_api_key()
    row = ApiKey(
        id=key_id or new_id("key"),
        org_id=org.id,
        label=label,
        prefix=display_prefix(plaintext),
        key_hash=hash_api_key(plaintext, secret),
    )
    session.add(row)
    session.flush()
    return row, plaintext


def list_api_keys(
    *, session: Session, org: Organisation, page: PageParams
) -> tuple[Sequence[ApiKey], str | None]:
    rows, cursor = paginate(session, select(ApiKey).where(ApiKey.org_id == org.id), ApiKey.id, page)
    return [r[0] for r in rows], cursor


def revoke_api_key(*, session: Session, org: Organisation, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != org.id:
        raise NotFoundError(f"API key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()
    return key


def find_operator(session: Session) -> Organisation | None:
    stmt = select(Organisation).where(Organisation.kind == OrgKind.OPERATOR.value)
    return session.exec(stmt.order_by(Organisation.id)).first()  # type: ignore[arg-type]


def has_active_key(session: Session, org: Organisation) -> bool:
    stmt = select(ApiKey.id).where(ApiKey.org_id == org.id, ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
    return session.exec(stmt).first() is not None
