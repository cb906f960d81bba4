"""Operators' pair rules: pin or forbid a (project, site) pair for the next match runs."""

from __future__ import annotations

from sqlmodel import Session, select

from schemas.api import PairRuleCreate, PairRulePublic
from service import repositories
from service.auth import Principal
from service.db import bump_market_version
from service.errors import InvalidFieldError, NotFoundError
from service.ids import new_id
from service.models import PairRule, utcnow
from service.pagination import PageParams, paginate


def to_public(rule: PairRule) -> PairRulePublic:
    return PairRulePublic.model_validate(rule, from_attributes=True)


def put_rule(*, session: Session, principal: Principal, rule_in: PairRuleCreate) -> PairRule:
    """One rule per pair (a new one replaces it) and one pin per project. Does not commit."""
    try:
        repositories.projects.get_project(
            session=session, principal=principal, project_id=rule_in.project_id
        )
    except NotFoundError as exc:
        raise InvalidFieldError("project_id", "no such project", code="unknown_reference") from exc
    try:
        repositories.sites.get_site(session=session, principal=principal, site_id=rule_in.site_id)
    except NotFoundError as exc:
        raise InvalidFieldError("site_id", "no such site", code="unknown_reference") from exc
    existing = session.exec(
        select(PairRule).where(
            PairRule.project_id == rule_in.project_id, PairRule.site_id == rule_in.site_id
        )
    ).first()
    if existing is not None:
        session.delete(existing)
        session.flush()
    if rule_in.rule.value == "pin":
        # One pin per project: a new pin replaces the project's other pins.
        for other in session.exec(
            select(PairRule).where(
                PairRule.project_id == rule_in.project_id, PairRule.rule == "pin"
            )
        ).all():
            session.delete(other)
        session.flush()
    rule = PairRule(
        id=new_id("rule"),
        project_id=rule_in.project_id,
        site_id=rule_in.site_id,
        rule=rule_in.rule.value,
        note=rule_in.note,
        created_by=principal.org_id,
        created_at=utcnow(),
    )
    session.add(rule)
    bump_market_version(session)
    return rule


def list_rules(
    *, session: Session, page: PageParams, project_id: str | None = None
) -> tuple[list[PairRulePublic], str | None]:
    stmt = select(PairRule)
    if project_id is not None:
        stmt = stmt.where(PairRule.project_id == project_id)
    rows, cursor = paginate(session, stmt, PairRule.id, page)
    return [to_public(r[0]) for r in rows], cursor


def delete_rule(*, session: Session, rule_id: str) -> None:
    rule = session.get(PairRule, rule_id)
    if rule is None:
        raise NotFoundError(f"pair rule {rule_id} not found")
    session.delete(rule)
    bump_market_version(session)
