"""Deals: the proposal lifecycle's action endpoints, operators' pair rules for the next runs,
organisations' webhooks and their events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from schemas.api import (
    ACTION_TARGET,
    EventPublic,
    Page,
    PairRuleCreate,
    PairRulePublic,
    ProposalAction,
    ProposalPublic,
    ProposalStatus,
    WebhookPublic,
    WebhookSet,
)
from service import repositories as repo
from service.deps import ID_PATTERN, CurrentOrg, OperatorOrg, PageDep, ServicesDep, SessionDep
from service.errors import NotFoundError
from service.flows import deals
from service.idempotency import IdempotencyDep
from service.models import Organisation
from service.notifications import outbox
from service.notifications.signing import SIGNATURE_HEADER, new_secret
from service.openapi import problems
from service.repositories import pair_rules
from service.transactions import Tx

router = APIRouter(tags=["proposals"])

_INVALID_STATE_EXAMPLE = {
    "type": "/problems/invalid-state",
    "title": "Invalid state",
    "status": 409,
    "detail": "a declined proposal cannot become accepted; allowed: none (final state)",
    "instance": "/v1/proposals/prp_01JD8QF6G7H8J9K0M1N2P3Q4R5/accept",
    "current_state": "declined",
    "allowed_moves": [],
}
_SHORTFALL_EXAMPLE = {
    "type": "/problems/capacity-shortfall",
    "title": "Not enough capacity",
    "status": 409,
    "detail": "site site_01JD8Q9V2B3C4D5E6F7G8H9J0K is short of 120 h in 1 process-month(s) "
    "to hold this proposal (first: cleanroom_assembly 2027-03, needs 140 h, 20 h free)",
    "instance": "/v1/proposals/prp_01JD8QF6G7H8J9K0M1N2P3Q4R5/accept",
    "shortfalls": [
        {
            "process": "cleanroom_assembly",
            "month": "2027-03",
            "needed_hours": 140,
            "free_hours": 20,
            "short_hours": 120,
        }
    ],
}


def lifecycle_problems() -> dict[int | str, dict[str, Any]]:
    """403/404/422 as usual; 409 with both of its shapes as examples."""
    out = problems(403, 404, 409, 422)
    out[409] = {
        "description": "The move is not allowed from the current state (`current_state`, "
        "`allowed_moves`), or accepting does not fit the site's capacity (`shortfalls`).",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": {
                    "invalid-state": {"value": _INVALID_STATE_EXAMPLE},
                    "capacity-shortfall": {"value": _SHORTFALL_EXAMPLE},
                },
            }
        },
    }
    return out


def apply_move(
    tx: Tx, services: ServicesDep, principal: CurrentOrg, proposal_id: str, target: ProposalStatus
) -> Response:
    ttl = services.settings.deals.proposal_ttl_s
    proposal = deals.move(tx.session, proposal_id=proposal_id, target=target, principal=principal)
    return tx.respond(repo.proposals.to_public(tx.session, proposal, ttl_s=ttl))


_ACTION_DOCS = {
    ProposalAction.ACCEPT: (
        "Accept (the CDMO proposed to): holds the project's hours at the site",
        "proposed -> accepted. Adds the project's whole hours per process and window month "
        "(its role's share, rounded up as the matcher rounds) to the listings' "
        "`reserved_hours`, atomically with a check that they fit: if not, 409 "
        "`capacity-shortfall` with the shortfall per process and month, and nothing changes.",
    ),
    ProposalAction.DECLINE: (
        "Decline (the CDMO proposed to)",
        "proposed -> declined. The pair is never proposed again by a run.",
    ),
    ProposalAction.CONFIRM: (
        "Confirm (the project's maker): the accepted proposal becomes a deal",
        "accepted -> confirmed. The hours stay held.",
    ),
    ProposalAction.WITHDRAW: (
        "Withdraw (the project's maker, or an operator)",
        "proposed or accepted -> withdrawn. Releases any hours held.",
    ),
}


def _action_route(action: ProposalAction) -> None:
    target = ACTION_TARGET[action]
    summary, description = _ACTION_DOCS[action]

    def endpoint(
        proposal_id: Annotated[str, Path(pattern=ID_PATTERN)],
        tx: Tx,
        services: ServicesDep,
        principal: CurrentOrg,
    ) -> Response:
        repo.proposals.get_proposal(
            session=tx.session, principal=principal, proposal_id=proposal_id
        )  # 404 for what the caller may not see
        return apply_move(tx, services, principal, proposal_id, target)

    endpoint.__name__ = f"{action.value}_proposal"
    router.add_api_route(
        f"/v1/proposals/{{proposal_id}}/{action.value}",
        endpoint,
        methods=["POST"],
        summary=summary,
        description=description + "\n\nOperators may make any party's move.",
        response_model=ProposalPublic,
        responses=lifecycle_problems(),
    )


for _action in ProposalAction:
    _action_route(_action)


# --- pair rules ----------------------------------------------------------------------------


@router.post(
    "/v1/pair-rules",
    status_code=201,
    tags=["match runs"],
    summary="Pin or forbid a (project, site) pair for the next match runs (operators)",
    description="A pin makes the next runs place the project at the site (while it is "
    "eligible and fits); a forbid keeps the site out of the project's candidates. One rule "
    "per pair: posting again replaces it.",
    response_model=PairRulePublic,
    responses=problems(403, 413, 415, 422),
    dependencies=[IdempotencyDep],
)
def put_pair_rule(rule_in: PairRuleCreate, tx: Tx, principal: OperatorOrg) -> Response:
    rule = pair_rules.put_rule(session=tx.session, principal=principal, rule_in=rule_in)
    return tx.respond(
        pair_rules.to_public(rule),
        status_code=201,
        headers={"Location": f"/v1/pair-rules/{rule.id}"},
    )


@router.get(
    "/v1/pair-rules",
    tags=["match runs"],
    summary="Pair rules (operators)",
    responses=problems(403, 422),
)
def list_pair_rules(
    session: SessionDep,
    _op: OperatorOrg,
    page: PageDep,
    project_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> Page[PairRulePublic]:
    rows, cursor = pair_rules.list_rules(session=session, page=page, project_id=project_id)
    return Page(items=rows, next_cursor=cursor)


@router.delete(
    "/v1/pair-rules/{rule_id}",
    status_code=204,
    tags=["match runs"],
    summary="Remove a pair rule (operators)",
    responses=problems(403, 404, 422),
)
def delete_pair_rule(
    rule_id: Annotated[str, Path(pattern=ID_PATTERN)], tx: Tx, _op: OperatorOrg
) -> Response:
    pair_rules.delete_rule(session=tx.session, rule_id=rule_id)
    tx.commit()
    return Response(status_code=204)


# --- webhooks and events -------------------------------------------------------------------


def _my_org(session: Any, principal: CurrentOrg) -> Organisation:
    org = session.get(Organisation, principal.org_id, with_for_update=True)
    if org is None:
        raise NotFoundError("organisation not found")
    return org


@router.put(
    "/v1/orgs/me/webhook",
    tags=["organisations"],
    summary="Set the organisation's webhook URL; returns a new signing secret (shown once)",
    description=f"Every event concerning the organisation is POSTed there as JSON, signed in "
    f"the `{SIGNATURE_HEADER}` header: `t=<unix time>,v1=<hex HMAC-SHA-256 of "
    f'"<t>.<body>" under the secret>`. Failed deliveries are retried with backoff.',
    response_model=WebhookPublic,
    responses=problems(413, 415, 422),
)
def set_webhook(webhook: WebhookSet, tx: Tx, principal: CurrentOrg) -> Response:
    org = _my_org(tx.session, principal)
    org.webhook_url = webhook.url
    org.webhook_secret = new_secret()
    tx.session.add(org)
    return tx.respond(WebhookPublic(url=org.webhook_url, secret=org.webhook_secret))


@router.get(
    "/v1/orgs/me/webhook",
    tags=["organisations"],
    summary="The organisation's webhook URL (not its secret)",
    responses=problems(),
)
def get_webhook(session: SessionDep, principal: CurrentOrg) -> WebhookPublic:
    org = session.get(Organisation, principal.org_id)
    return WebhookPublic(url=org.webhook_url if org is not None else None)


@router.delete(
    "/v1/orgs/me/webhook",
    status_code=204,
    tags=["organisations"],
    summary="Remove the webhook: later events are recorded, not delivered",
    responses=problems(),
)
def delete_webhook(tx: Tx, principal: CurrentOrg) -> Response:
    org = _my_org(tx.session, principal)
    org.webhook_url = None
    org.webhook_secret = None
    tx.session.add(org)
    tx.commit()
    return Response(status_code=204)


@router.get(
    "/v1/orgs/me/events",
    tags=["organisations"],
    summary="Events concerning the organisation, oldest first, with their delivery state",
    responses=problems(422),
)
def list_events(
    session: SessionDep,
    principal: CurrentOrg,
    page: PageDep,
    type: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_.]+$")] = None,
) -> Page[EventPublic]:
    rows, cursor = outbox.list_events(
        session=session, org_id=principal.org_id, page=page, kind=type
    )
    return Page(items=rows, next_cursor=cursor)
