"""Logs, metrics and traces of the Lambda wing, through Powertools for AWS Lambda (Python).

The only module that knows Powertools and the X-Ray SDK (see ``docs/observability.md``):

- **Logs**: one JSON object per line from Powertools' ``LambdaPowertoolsFormatter`` on the root logger,
  so every ``logging.getLogger(__name__)`` of ``chalicelib`` is structured (level, location, message,
  timestamp, service, ``xray_trace_id``, the handler and the invocation id, and the ``extra`` keys).
  ``TIERLIFT_LOG_LEVEL`` sets the level; the one outcome line per invocation (logger ``chalicelib.entry``)
  is logged at INFO *whatever that level is*, so prod at WARNING keeps it.
- **Metrics**: CloudWatch embedded metric format, printed to stdout by Powertools' ``single_metric`` (each
  metric with its own dimensions; CloudWatch Logs extracts them, no API call). Emitted only in Lambda
  (or when a test turns :data:`metrics` on); validated everywhere, so a wrong call fails tests too.
- **Traces**: in Lambda, Powertools' ``Tracer`` patches botocore only (each AWS call is a subsegment) and
  :func:`traced` opens one subsegment per handler, annotated with ``handler``, ``tenant``,
  ``environment``, ``version``, ``promotion_id`` and ``action``. The facade segment Lambda creates is never
  annotated (that raises); only this subsegment is.

Swapping to OpenTelemetry (the X-Ray SDK is in maintenance): only this module changes. Replace the
``Tracer`` in :func:`setup` by an OTel ``TracerProvider`` (the ADOT Lambda layer, or
``opentelemetry-sdk`` + ``opentelemetry-instrumentation-botocore`` + the X-Ray id generator and
propagator), and :class:`_XraySpan` by a wrapper that calls ``span.set_attribute`` where it calls
``put_annotation`` (X-Ray indexes OTel attributes listed in the collector's ``indexed_attributes``).
:func:`traced` keeps its signature, so ``entry.py`` does not change.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = "tierlift"
METRIC_NAMESPACE = "tierlift"
OUTCOME_LOGGER = "chalicelib.entry"

_tracer: Any = None  # Powertools' Tracer, in Lambda only


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------
class JsonFormatter(LambdaPowertoolsFormatter):
    """Powertools' structured formatter; the ``data`` dict tierlift passes as ``extra`` is flattened into
    the line (the outcome's ``action``, ``reason``, ``promotion_id``, ``namespace``... at the top level)."""

    def serialize(self, log: Any) -> str:
        data = log.pop("data", None)
        if isinstance(data, dict):
            for key, value in data.items():
                log.setdefault(key, value)
        return super().serialize(log)


def formatter() -> JsonFormatter:
    return JsonFormatter(utc=True, service=SERVICE)


def _our_handler(root: logging.Logger) -> logging.Handler | None:
    return next((h for h in root.handlers if isinstance(h.formatter, JsonFormatter)), None)


def setup(level: str | None = None) -> None:
    """Configure logs (and, in Lambda, tracing). Idempotent: called once per container by ``app.py``."""
    global _tracer
    root = logging.getLogger()
    if _our_handler(root) is None:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(formatter())
        if in_lambda():
            root.handlers = [handler]  # the runtime's own handler would print every line twice
        else:
            root.addHandler(handler)
    chosen = logging.getLevelName((level or os.environ.get("TIERLIFT_LOG_LEVEL") or "INFO").upper())
    chosen = chosen if isinstance(chosen, int) else logging.INFO
    root.setLevel(chosen)
    # The outcome line is kept at every level: its logger never filters out INFO.
    logging.getLogger(OUTCOME_LOGGER).setLevel(min(chosen, logging.INFO))
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "aws_xray_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    metrics.enabled = in_lambda() and os.environ.get("TIERLIFT_METRICS", "true") != "false"
    metrics.per_tenant = os.environ.get("TIERLIFT_METRICS_PER_TENANT", "false") == "true"
    if _tracer is None and in_lambda() and os.environ.get("TIERLIFT_TRACING", "true") == "true":
        from aws_lambda_powertools import Tracer

        # botocore only: the one library tierlift calls out with (not Powertools' default of every
        # library the X-Ray SDK knows, which imports and patches each one it finds).
        _tracer = Tracer(service=SERVICE, patch_modules=("botocore",))


@contextmanager
def log_context(**keys: str | None) -> Iterator[None]:
    """Add ``keys`` to every log line of the block (the handler and the invocation id). The keys live in
    a context variable (Powertools' thread-safe keys), so concurrent invocations in one process (the local
    cloud) do not mix them up."""
    present = {k: v for k, v in keys.items() if v is not None}
    _KEYS.thread_safe_append_keys(**present)
    try:
        yield
    finally:
        _KEYS.thread_safe_remove_keys(present)


_KEYS = formatter()  # Powertools keeps thread-safe keys per context, shared by every formatter


# --------------------------------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------------------------------
class Span:
    """The handler's trace segment as tierlift sees it: something to annotate (a no-op without tracing)."""

    def annotate(self, **annotations: str | None) -> None:
        return None


class _XraySpan(Span):
    def __init__(self, subsegment: Any) -> None:
        self.subsegment = subsegment

    def annotate(self, **annotations: str | None) -> None:
        for key, value in annotations.items():
            if value is not None and value != "":
                # X-Ray keys: letters, digits, underscore; values up to 250 characters here.
                self.subsegment.put_annotation(key, str(value)[:250])


@contextmanager
def traced(name: str, **annotations: str | None) -> Iterator[Span]:
    """Run the block in an X-Ray subsegment ``name`` annotated with ``annotations`` (when tracing is on).

    Yields a :class:`Span`; ``span.annotate(...)`` adds what is only known at the end (the outcome).
    """
    if _tracer is None:
        yield Span()
        return
    with _tracer.provider.in_subsegment(name) as subsegment:
        if subsegment is None:  # no segment to attach to (e.g. context_missing=LOG_ERROR)
            yield Span()
            return
        span = _XraySpan(subsegment)
        span.annotate(**annotations)
        yield span


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
# Letters, digits and the separators of tierlift's names (no regex: compiling one at import costs ms).
_DIMENSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/+=@-")
UNKNOWN = "unknown"


class PromotionMetrics:
    """The pipeline's CloudWatch metrics (namespace ``tierlift``), one EMF line per call.

    Dimensions are ``environment`` (plus ``stage`` for :meth:`stage_completed`), the tenant an EMF
    property of the line (searchable in Logs Insights, no metric of its own); with :attr:`per_tenant`
    (``TIERLIFT_METRICS_PER_TENANT=true``) ``tenant`` is a dimension too. Each distinct set of dimension
    values is one CloudWatch metric, so the values must come from names the pipeline already
    validated: a registered tenant and one of its configured environments. Anything else (a rejected
    request naming a tenant nobody registered) is counted under ``unknown``; see
    ``docs/observability.md`` for the bound.

    Outside Lambda (tests, the local cloud) :attr:`enabled` is False and nothing is printed, but the
    arguments are still checked.
    """

    OUTCOMES = {
        "completed": "PromotionsCompleted",
        "failed": "PromotionsFailed",
        "rolled_back": "PromotionsRolledBack",
        "cancelled": "PromotionsCancelled",
        "rejected": "PromotionsRejected",
    }

    def __init__(self) -> None:
        self.enabled = False
        # Per-tenant dimensions cost a metric per tenant environment (TIERLIFT_METRICS_PER_TENANT=true);
        # by default the environment (tier) is the dimension and the tenant an EMF property (Logs Insights).
        self.per_tenant = False

    def promotion_started(self, tenant: str, environment: str) -> None:
        """A promotion took its environment's lock and started (once per promotion id)."""
        self._count("PromotionsStarted", tenant, environment)

    def promotion_ended(self, tenant: str, environment: str, outcome: str, seconds: float | None = None) -> None:
        """A promotion ended: ``outcome`` is ``completed``, ``failed``, ``rolled_back``, ``cancelled`` or
        ``rejected`` (``state.Outcome``); ``seconds`` from its request to its end (``PromotionDuration``)."""
        name = self.OUTCOMES.get(_value(outcome))
        if name is None:
            raise ValueError(f"promotion outcome {outcome!r} is not one of {sorted(self.OUTCOMES)}")
        self._count(name, tenant, environment)
        if seconds is not None:
            self._emit("PromotionDuration", MetricUnit.Seconds, _seconds(seconds), tenant, environment)

    def promotion_rejected(self, tenant: str | None = None, environment: str | None = None) -> None:
        """A request was rejected. Pass ``tenant``/``environment`` only when they name a registered
        tenant and one of its environments; otherwise they are counted as ``unknown``."""
        self._count("PromotionsRejected", tenant or UNKNOWN, environment or UNKNOWN)

    def promotion_stuck(self, tenant: str, environment: str) -> None:
        """The sweep found a promotion stuck past its stage's timeout (its plan's ``stuck_<stage>``): one
        count per stuck promotion per sweep (``PromotionsStuck``, alarmed per environment)."""
        self._count("PromotionsStuck", tenant, environment)

    def stage_completed(self, tenant: str, environment: str, stage: str, seconds: float) -> None:
        """A promotion left ``stage`` after ``seconds`` in it (``StageDuration``, dimension ``stage``)."""
        self._emit("StageDuration", MetricUnit.Seconds, _seconds(seconds), tenant, environment, stage=_value(stage))

    def stage_entered(
        self, tenant: str, environment: str, stage: str, previous: str | None = None, seconds: float | None = None
    ) -> None:
        """The same seen from the entering side: the promotion entered ``stage`` after ``seconds`` in
        ``previous``; emits ``StageDuration`` for ``previous`` (nothing when either is None, e.g. the first
        stage). ``stage`` is checked like a dimension value."""
        if not _checked("StageDuration", {"stage": _value(stage)}):
            return
        if previous is not None and seconds is not None:
            self.stage_completed(tenant, environment, previous, seconds)

    def _count(self, name: str, tenant: str, environment: str) -> None:
        self._emit(name, MetricUnit.Count, 1, tenant, environment)

    def _emit(self, name: str, unit: MetricUnit, value: float, tenant: str, environment: str, **more: str) -> None:
        checked = {"tenant": _value(tenant), "environment": _value(environment), **more}
        if not _checked(name, checked) or not self.enabled:
            return
        dimensions = dict(checked) if self.per_tenant else {k: v for k, v in checked.items() if k != "tenant"}
        with single_metric(
            name=name, unit=unit, value=value, namespace=METRIC_NAMESPACE, default_dimensions=dimensions
        ) as metric:
            if not self.per_tenant:
                metric.add_metadata(key="tenant", value=checked["tenant"])  # a property, not a dimension


def _checked(name: str, dimensions: dict[str, str]) -> bool:
    """True when every dimension value is a plain name. A caller's bug otherwise: raises outside Lambda
    (tests fail), logs an error in Lambda (a metric never fails a handler)."""
    bad = [f"{key}={dim!r}" for key, dim in dimensions.items() if not _valid_dimension(dim)]
    if not bad:
        return True
    if not in_lambda():
        raise ValueError(f"metric {name}: dimension {', '.join(bad)} is not a validated name")
    logging.getLogger(__name__).error("metric %s not emitted: bad dimension %s", name, ", ".join(bad))
    return False


def _valid_dimension(value: str) -> bool:
    return 0 < len(value) <= 64 and _DIMENSION_CHARS.issuperset(value)


def _value(value: object) -> str:
    """A name or an enum member (its value)."""
    return str(getattr(value, "value", value))


def _seconds(value: float) -> float:
    if value < 0:
        raise ValueError(f"a duration cannot be negative ({value})")
    return round(float(value), 3)


metrics = PromotionMetrics()
