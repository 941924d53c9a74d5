"""``ECS Deployment State Change``: the new tasks are stable (the promotion completes) or the circuit
breaker gave up (it rolls back). Matched by the deployment id the deploy's claim recorded."""

from __future__ import annotations

import logging

from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.config import InvalidConfig
from chalicelib.domain.decisions import OUTCOME_OF, Action, decide_deployment
from chalicelib.domain.model import EnvRecord
from chalicelib.domain.names import InvalidName, Namespace
from chalicelib.usecases.cells import foreign
from chalicelib.usecases.endings import end
from chalicelib.usecases.requests import drain_after, resume_own
from chalicelib.usecases.transitions import Result, ignore

logger = logging.getLogger(__name__)

OUTCOMES = {ev.DEPLOYMENT_COMPLETED: "COMPLETED", ev.DEPLOYMENT_FAILED: "FAILED"}


class NotYet(RuntimeError):
    """The event came before the state it is about was recorded: Lambda retries it shortly."""


def on_deployment_state(deps: Deps, event: ev.DeploymentEvent) -> Result:
    if event.event_name not in OUTCOMES:
        return ignore(f"{ev.safe(event.event_name)} needs no action", expected=True)
    rec = _record_of(deps, event.cluster, event.service)
    if rec is None:
        return ignore(f"no promotion in flight targets service {event.cluster}/{event.service}", expected=True)
    if rec.promotion is not None:
        refused = foreign(deps, event.account, rec.promotion.request.cell_settings)
        if refused is not None:
            return ignore(f"{refused}: not {rec.namespace}'s deployment", rec.namespace.name, rec.promotion.id)
    return apply_deployment_outcome(deps, rec, event.deployment_id, OUTCOMES[event.event_name], event.reason)


def _record_of(deps: Deps, cluster: str, service: str) -> EnvRecord | None:
    """The environment whose promotion in flight targets that service: by the service's name (the
    contract's convention, ``<namespace>``: no extra call), else by the index ``tenant register`` writes.
    With no promotion in flight, the environment the service is named after (its queue may wait)."""
    tried: set[Namespace] = set()
    idle: EnvRecord | None = None
    try:
        named: Namespace | None = Namespace.parse(service)
    except InvalidName:
        named = None
    if named is not None:
        tried.add(named)
        rec = deps.store.read(named)
        if _is_target(rec, cluster, service):
            return rec
        idle = rec if rec.promotion is None else None
    indexed = deps.store.namespace_of_service(cluster, service)
    if indexed is not None and indexed not in tried:
        rec = deps.store.read(indexed)
        if _is_target(rec, cluster, service):
            return rec
        idle = idle or (rec if rec.promotion is None else None)
    return idle


def _is_target(rec: EnvRecord, cluster: str, service: str) -> bool:
    promotion = rec.promotion
    if promotion is None or promotion.request.target is None:
        return False
    try:
        target = promotion.request.target_settings()
    except InvalidConfig:
        return False
    return target.cluster == cluster and target.service == service


def apply_deployment_outcome(deps: Deps, rec: EnvRecord, deployment_id: str, outcome: str, reason: str = "") -> Result:
    """Act on a deployment's outcome, from an event or observed by the sweep."""
    ns, promotion = rec.namespace, rec.promotion
    decision = decide_deployment(promotion=promotion, deployment_id=deployment_id, outcome=outcome)
    if decision.action is Action.RETRY_LATER:
        raise NotYet(f"{ns}: {decision.reason}")
    if decision.action in OUTCOME_OF and promotion is not None:
        return drain_after(deps, ns, end(deps, rec, promotion, OUTCOME_OF[decision.action], reason or decision.reason))
    resumed = resume_own(deps, rec)
    if resumed is not None:
        return resumed
    return ignore(decision.reason, ns.name, promotion.id if promotion else None, expected=True)
