"""Structured logging and X-Ray tracing: the only module that imports aws-xray-sdk.

In Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) boto3 calls are traced and each handler runs in its own
subsegment carrying the tenant and environment as annotations. The facade segment Lambda creates is
never annotated (that raises); only subsegments are. Outside Lambda nothing is imported or patched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOG_KEYS = ("reason", "namespace", "promotion_id", "action", "handler", "event_id", "detail_type")
_tracing = False


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, with the extra keys tierlift passes."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _LOG_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        extra = getattr(record, "data", None)
        if isinstance(extra, dict):
            data.update(extra)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup(level: str | None = None) -> None:
    """Configure logging (and X-Ray in Lambda). Idempotent."""
    global _tracing
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            root.handlers = [handler]
        else:
            root.addHandler(handler)
    root.setLevel(level or os.environ.get("TIERLIFT_LOG_LEVEL", "INFO"))
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if (
        os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        and os.environ.get("TIERLIFT_TRACING", "true") == "true"
        and not _tracing
    ):
        try:
            from aws_xray_sdk.core import patch

            patch(("boto3", "botocore"))
            _tracing = True
        except ImportError:  # pragma: no cover - packaging problem, reported not fatal
            logging.getLogger(__name__).error("aws-xray-sdk is not packaged; tracing is off")


@contextmanager
def traced(name: str, **annotations: str | None) -> Iterator[None]:
    """Run the block in an X-Ray subsegment annotated with ``annotations`` (when tracing is on)."""
    if not _tracing:
        yield
        return
    from aws_xray_sdk.core import xray_recorder

    with xray_recorder.in_subsegment(name) as subsegment:
        if subsegment is not None:
            for key, value in annotations.items():
                if value is not None:
                    subsegment.put_annotation(key, str(value)[:250])
        yield
