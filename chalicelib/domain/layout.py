"""Where each record lives in SSM Parameter Store: the one place that builds (and parses) a path.

``/<root>/<tenant>/config`` is the tenant's config; per target environment ``/<root>/<tenant>/<env>/``:

| key | record |
| --- | --- |
| ``state/<request id>.<attempt>`` | :class:`~chalicelib.domain.model.EnvState`, the newest (by ``seq``) is the state |
| ``promotion`` | the lock (:class:`~chalicelib.domain.model.Request`) |
| ``deploy/<promotion id>.<n>`` | the in-flight promotion's :class:`~chalicelib.domain.model.DeployEntry` log |
| ``db/<version>`` | :class:`~chalicelib.domain.model.DbRecord` |
| ``queue/<request id>`` | a request waiting for the environment |
| ``cancel/<request id>`` | an operator's cancel of a queued request |

Across tenants: ``/<root>/services/<cluster>/<service>`` (the namespace an ECS service belongs to)
and ``/<root>/waiting/<YYYYMMDDHHMMSS>-<namespace>`` (promotions waiting for DB-instance headroom or
for a stack's delete). Ids are letters, digits and ``-`` (never ``.``), so ``<id>.<n>`` parses back.
"""

from __future__ import annotations

from chalicelib.domain.names import Frozen, InvalidName, Namespace, Tenant, Version
from chalicelib.domain.records import NamedTuple

LOCK = "promotion"
STATE = "state"
DEPLOY = "deploy"
DB = "db"
QUEUE = "queue"
CANCEL = "cancel"
SHARED = frozenset({"services", "waiting"})


class EnvKey(NamedTuple):
    """A parameter of one environment, parsed: its kind, the id or version it is for, and the number."""

    kind: str
    ident: str = ""
    n: int = 0


class Layout(Frozen):
    """The paths below ``root`` (its trailing ``/`` dropped). Immutable, compared by ``root``."""

    _parts = __match_args__ = ("root",)
    root: str

    def __init__(self, root: str = "/tierlift") -> None:
        object.__setattr__(self, "root", root.rstrip("/") or "/tierlift")

    # tenants and environments ----------------------------------------------------------------------
    def tenant(self, tenant: Tenant) -> str:
        return f"{self.root}/{tenant.name}"

    def config(self, tenant: Tenant) -> str:
        return f"{self.tenant(tenant)}/config"

    def env(self, ns: Namespace) -> str:
        return f"{self.tenant(ns.tenant)}/{ns.environment}"

    def lock(self, ns: Namespace) -> str:
        return f"{self.env(ns)}/{LOCK}"

    def state(self, ns: Namespace, ended: str, attempt: int = 1) -> str:
        return f"{self.env(ns)}/{STATE}/{ended or 'none'}.{attempt}"

    def deploy(self, ns: Namespace, promotion_id: str, n: int) -> str:
        return f"{self.env(ns)}/{DEPLOY}/{promotion_id}.{n}"

    def db(self, ns: Namespace, version: Version | str) -> str:
        return f"{self.env(ns)}/{DB}/{version}"

    def queue(self, ns: Namespace, request_id: str) -> str:
        return f"{self.env(ns)}/{QUEUE}/{request_id}"

    def cancel(self, ns: Namespace, request_id: str) -> str:
        return f"{self.env(ns)}/{CANCEL}/{request_id}"

    # across tenants ----------------------------------------------------------------------------------
    def services(self) -> str:
        return f"{self.root}/services"

    def service(self, cluster: str, service: str) -> str:
        return f"{self.services()}/{cluster}/{service}"

    def waiting(self) -> str:
        return f"{self.root}/waiting"

    def waiting_entry(self, requested_at: str, ns: Namespace) -> str:
        """Sorted by name is sorted by request time."""
        digits = "".join(c for c in requested_at if c.isdigit())[:14].ljust(14, "0")
        return f"{self.waiting()}/{digits}-{ns.name}"

    @staticmethod
    def waiting_namespace(name: str) -> Namespace:
        return Namespace.parse(name.rsplit("/", 1)[1][15:])

    # parsing -----------------------------------------------------------------------------------------
    def split(self, name: str) -> tuple[str, str, str] | None:
        """``(tenant, environment or "", rest)`` of a parameter below the root; None for shared ones."""
        if not name.startswith(self.root + "/"):
            return None
        parts = name[len(self.root) + 1 :].split("/", 2)
        if parts[0] in SHARED or len(parts) < 2:
            return None
        if parts[1] == "config" and len(parts) == 2:
            return parts[0], "", "config"
        return parts[0], parts[1], parts[2] if len(parts) > 2 else ""

    @staticmethod
    def env_key(rest: str) -> EnvKey | None:
        """What an environment's parameter is (``rest`` is its path below the environment)."""
        if rest == LOCK:
            return EnvKey(LOCK)
        kind, _, leaf = rest.partition("/")
        if not leaf or "/" in leaf:
            return None
        if kind in (STATE, DEPLOY):
            ident, dot, number = leaf.rpartition(".")
            if not dot or not number.isdigit():
                return None
            return EnvKey(kind, ident, int(number))
        if kind in (DB, QUEUE, CANCEL):
            return EnvKey(kind, leaf)
        return None

    def namespace_of(self, tenant: str, environment: str) -> Namespace | None:
        try:
            return Tenant.parse(tenant).namespace(environment)
        except InvalidName:
            return None
