"""The state store: tierlift's records in a parameter store, under :mod:`chalicelib.domain.layout`.

One class, two twins: ``StateStore(SsmParameters(ssm))`` in Lambda and ``InMemoryStateStore()``
(:mod:`chalicelib.adapters.memory`) in tests. Reads are listings of a prefix (one call per page of ten),
writes are create-only where exclusivity matters (the lock, deploy entries, state records, queue
entries, cancel marks) and overwrites only by the single owner of a name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.domain.config import TenantConfig, parse_config
from chalicelib.domain.layout import Layout
from chalicelib.domain.model import DbRecord, DeployEntry, EnvRecord, EnvState, Promotion, Request, UnknownTenant
from chalicelib.domain.names import InvalidName, Namespace, Tenant, Version
from chalicelib.domain.records import NamedTuple
from chalicelib.domain.tree import parse_env, parse_tree

if TYPE_CHECKING:
    from chalicelib.domain.ports import Parameters

logger = logging.getLogger(__name__)


class TenantRecord(NamedTuple):
    """A tenant's config and every environment's record, from one listing of the tenant."""

    tenant: Tenant
    config_path: str
    config_text: str | None
    envs: dict[str, EnvRecord]

    def env(self, environment: str) -> EnvRecord:
        found = self.envs.get(environment)
        if found is not None:
            return found
        ns = self.tenant.namespace(environment)
        return EnvRecord(namespace=ns, config_text=self.config_text, config_path=self.config_path)


class Waiting(NamedTuple):
    """A promotion waiting (holding its lock) for DB-instance headroom or for a stack's delete."""

    entry: str
    namespace: Namespace
    promotion_id: str
    stack: str | None = None  # waiting for this stack's delete; None: for an instance
    account: str | None = None  # the cell account whose headroom it waits for; None: the central account


class StateStore:
    """tierlift's state in a :class:`~chalicelib.domain.ports.Parameters` store."""

    def __init__(self, parameters: Parameters, root: str = "/tierlift") -> None:
        self.parameters = parameters
        self.layout = Layout(root)
        self.root = self.layout.root

    # reading ---------------------------------------------------------------------------------------
    def read(self, ns: Namespace) -> EnvRecord:
        """One environment, from one listing (no config: use :meth:`read_tenant` when it is needed)."""
        return parse_env(self.layout, ns, self.parameters.list(self.layout.env(ns)))

    def read_tenant(self, tenant: Tenant) -> TenantRecord:
        """The tenant's config and all its environments, from one listing of the tenant's prefix."""
        params = self.parameters.list(self.layout.tenant(tenant))
        config_path = self.layout.config(tenant)
        config_text = params.get(config_path, (None, None))[0]
        config = (config_path, config_text) if config_text is not None else None
        envs: dict[str, EnvRecord] = {}
        names = {name.split("/")[len(self.layout.tenant(tenant).split("/"))] for name in params}
        for env in sorted(names - {"config"}):
            ns = self.layout.namespace_of(tenant.name, env)
            if ns is not None:
                envs[env] = parse_env(self.layout, ns, params, config)
        return TenantRecord(tenant, config_path, config_text, envs)

    def read_with_config(self, ns: Namespace) -> EnvRecord:
        return self.read_tenant(ns.tenant).env(ns.environment)

    def walk(self) -> list[EnvRecord]:
        """Every environment's record from one paginated walk of the root (the sweep, ``status``)."""
        return parse_tree(self.layout, self.parameters.list(self.root))

    def verify(self, ns: Namespace, promotion_id: str) -> tuple[str | None, bool]:
        """After a claim, read again what could make it void: who holds the lock now, and whether the
        promotion's ending was claimed (one ``GetParameters``)."""
        lock_key, ending_key = self.layout.lock(ns), self.layout.state(ns, promotion_id)
        found = self.parameters.get_many([lock_key, ending_key])
        holder = Request.from_json(found[lock_key]).id if lock_key in found else None
        return holder, ending_key in found

    # the tenant config ------------------------------------------------------------------------------
    def get_config(self, tenant: Tenant) -> TenantConfig:
        text = self.parameters.get(self.layout.config(tenant))
        if text is None:
            raise UnknownTenant(f"tenant {tenant} has no config at {self.layout.config(tenant)}")
        return parse_config(tenant, text)

    def put_config(self, config: TenantConfig) -> None:
        self.parameters.put(self.layout.config(config.tenant), config.to_json())

    # the lock, the queue, cancels -------------------------------------------------------------------
    def take_lock(self, request: Request) -> bool:
        """Take the environment's lock for ``request`` (create-only). False when it is held."""
        return self.parameters.create(self.layout.lock(request.namespace), request.to_json())

    def put_queue(self, ns: Namespace, request: Request) -> bool:
        return self.parameters.create(self.layout.queue(ns, request.id), request.to_json())

    def put_cancel(self, ns: Namespace, request_id: str, reason: str) -> bool:
        return self.parameters.create(self.layout.cancel(ns, request_id), reason)

    # deploy entries ---------------------------------------------------------------------------------
    def append_deploy(self, promotion: Promotion, entry: DeployEntry) -> DeployEntry | None:
        """The promotion's next deploy entry, create-only: None when someone else appended it first."""
        n = (promotion.latest.n if promotion.latest else 0) + 1
        entry = entry._replace(n=n)
        key = self.layout.deploy(promotion.namespace, promotion.id, n)
        return entry if self.parameters.create(key, entry.to_json()) else None

    def complete_deploy(self, promotion: Promotion, entry: DeployEntry) -> DeployEntry:
        """The owner of a deploy claim completes it (overwrites its own entry: no one else writes it)."""
        done = entry._replace(done=True, lease_until=None)
        self.parameters.put(self.layout.deploy(promotion.namespace, promotion.id, entry.n), done.to_json())
        return done

    def deploy_keys(self, promotion: Promotion) -> list[str]:
        return [self.layout.deploy(promotion.namespace, promotion.id, e.n) for e in promotion.deploys]

    # state records ----------------------------------------------------------------------------------
    def create_state(self, ns: Namespace, state: EnvState) -> bool:
        """The next state record, create-only: an ending's claim and the environment's new state."""
        return self.parameters.create(self.layout.state(ns, state.ended, state.attempt), state.to_json())

    def put_state(self, ns: Namespace, state: EnvState) -> None:
        """Overwrite a state record this invocation owns (the migration's first record)."""
        self.parameters.put(self.layout.state(ns, state.ended, state.attempt), state.to_json())

    def state_key(self, ns: Namespace, state: EnvState) -> str:
        return self.layout.state(ns, state.ended, state.attempt)

    # db records -------------------------------------------------------------------------------------
    def put_db(self, ns: Namespace, version: Version, record: DbRecord) -> None:
        self.parameters.put(self.layout.db(ns, version), record.to_json())

    def db_path(self, ns: Namespace, version: Version) -> str:
        return self.layout.db(ns, version)

    def db_param_arn(self, ns: Namespace, version: Version, region: str, account: str) -> str:
        return f"arn:aws:ssm:{region}:{account}:parameter{self.layout.db(ns, version)}"

    # deleting ---------------------------------------------------------------------------------------
    def delete(self, keys: Iterable[str]) -> int:
        """Delete these parameters in batches of ten (``DeleteParameters``)."""
        names = [k for k in keys if k]
        return self.parameters.delete_many(names) if names else 0

    # ECS services -> namespaces -----------------------------------------------------------------------
    def namespace_of_service(self, cluster: str, service: str) -> Namespace | None:
        text = self.parameters.get(self.layout.service(cluster, service))
        try:
            return Namespace.parse(text) if text else None
        except InvalidName:
            return None

    def index_service(self, cluster: str, service: str, ns: Namespace) -> bool:
        """Record which namespace a service belongs to (create-only; ``tenant register`` writes it)."""
        return self.parameters.create(self.layout.service(cluster, service), ns.name)

    # waiting for headroom or a stack's delete --------------------------------------------------------
    def waiting(self) -> list[Waiting]:
        """The promotions waiting, oldest request first."""
        return self.waiting_in(self.parameters.list(self.layout.waiting(), recursive=False))

    def waiting_in(self, params: Mapping[str, tuple[str, Any]]) -> list[Waiting]:
        """The waiting list's entries among ``params`` (a listing of the list, or of the whole root)."""
        prefix = self.layout.waiting() + "/"
        out = []
        for name, (value, _) in sorted(params.items()):
            if not name.startswith(prefix) or "/" in name[len(prefix) :]:
                continue
            try:
                data: Any = json.loads(value) if value.startswith("{") else {"promotion_id": value}
                account = data.get("account")
                out.append(
                    Waiting(
                        name,
                        self.layout.waiting_namespace(name),
                        str(data["promotion_id"]),
                        data.get("stack"),
                        account if isinstance(account, str) else None,
                    )
                )
            except (InvalidName, KeyError, ValueError):
                logger.error("unreadable waiting entry %s", name)
        return out

    def waiting_entry(self, requested_at: str, ns: Namespace) -> str:
        return self.layout.waiting_entry(requested_at, ns)

    def put_waiting(self, entry: str, promotion_id: str, stack: str | None = None) -> bool:
        value = json.dumps({"promotion_id": promotion_id, "stack": stack} if stack else {"promotion_id": promotion_id})
        return self.parameters.create(entry, value)

    def delete_waiting(self, entry: str) -> None:
        self.parameters.delete(entry)

    # conveniences for the operator wing and the tests -------------------------------------------------
    def config_path(self, tenant: Tenant) -> str:
        return self.layout.config(tenant)

    def recorded(self, ns: Namespace) -> EnvRecord:
        """One environment with its tenant's config."""
        return self.read_with_config(ns)

    def all_recorded(self) -> list[EnvRecord]:
        return self.walk()

    def get_promotion(self, ns: Namespace) -> Promotion | None:
        return self.read(ns).promotion

    def get_active(self, ns: Namespace) -> Version | None:
        return self.read(ns).active

    def get_db(self, ns: Namespace, version: Version) -> dict[str, Any] | None:
        text = self.parameters.get(self.layout.db(ns, version))
        return json.loads(text) if text else None
