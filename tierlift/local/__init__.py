"""The local cloud: moto's server plus the AWS behaviour moto lacks (events, async states, schedules).

Operator wing only; never imported by ``chalicelib`` and never bundled into the Lambda zip.
"""

from tierlift.local.cloud import LocalCloud

__all__ = ["LocalCloud"]
