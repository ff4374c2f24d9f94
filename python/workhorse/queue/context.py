"""Context that travels with a queued job: what the enqueuing code was part of.

Adapters register providers here: `request_id()` stores the enqueuing execution's request id,
`tracing()` a PRODUCER span's W3C trace context. The worker hands them back to the job's
execution (the request id seeds its context; tracing makes the CONSUMER span a child of the
PRODUCER span), as isp-kit bgjobx's RequestId middleware and the messaging conventions do.
"""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["add_provider", "meta_for"]

# (job name) -> the keys to store with the job, or None.
Provider = Callable[[str], "dict[str, str] | None"]

_providers: dict[str, Provider] = {}


def add_provider(key: str, provider: Provider) -> None:
    """Register (or replace) the provider named key."""
    _providers[key] = provider


def meta_for(name: str) -> str | None:
    """The JSON to store with a job being enqueued, or None when there is nothing to carry."""
    meta: dict[str, str] = {}
    for provider in list(_providers.values()):
        got = provider(name)
        if got:
            meta.update(got)
    return json.dumps(meta, separators=(",", ":")) if meta else None
