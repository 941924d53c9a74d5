"""Image references: which ones name an image by digest, which live in a private ECR registry.

The pipeline runs and records images **by digest**: what completed in an environment is an immutable
image, and an environment that requires it receives exactly that image (not whatever a tag points at
by then). A private ECR reference by tag is resolved to its digest once, at the cutover.
"""

from __future__ import annotations

import re

from chalicelib.domain.records import NamedTuple

# Pattern texts, compiled on first use by re's cache rather than at import (docs/performance.md)
_ECR = (
    r"^(?P<registry>(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?)"
    r"/(?P<repository>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_DIGEST = r"@sha256:[0-9a-f]{64}$"


def by_digest(image: str) -> bool:
    """Does ``image`` name one immutable image (``...@sha256:<64 hex>``)?"""
    return bool(re.search(_DIGEST, image))


class EcrImage(NamedTuple):
    registry: str  # <account>.dkr.ecr.<region>.amazonaws.com
    account: str
    region: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, image: str) -> EcrImage | None:
        """The parts of a private ECR reference; None for any other registry."""
        match = re.fullmatch(_ECR, image)
        if match is None:
            return None
        return cls(
            match["registry"], match["account"], match["region"], match["repository"], match["tag"], match["digest"]
        )

    def pinned(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"
