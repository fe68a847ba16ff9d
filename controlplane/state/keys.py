"""The Redis schema, in one place (DESIGN.md "Redis keys").

The cluster name sits in a hash tag ``{C}`` so a Redis Cluster shards by cluster
and every per-cluster multi-key operation stays on one slot.
"""

from __future__ import annotations

PREFIX = "slaplane"
TELEMETRY_STREAM_MAXLEN = 10_000
REQUESTS_STREAM_MAXLEN = 100_000
DECISIONS_STREAM_MAXLEN = 10_000
AUDIT_STREAM_MAXLEN = 10_000


def workers_zset(cluster: str) -> str:
    """zset worker id → last-seen ms."""
    return f"{PREFIX}:{{{cluster}}}:workers"


def worker_hash(cluster: str, worker: str) -> str:
    """hash with the latest snapshot of one worker."""
    return f"{PREFIX}:{{{cluster}}}:worker:{worker}"


def telemetry_stream(cluster: str) -> str:
    return f"{PREFIX}:{{{cluster}}}:telemetry"


def requests_stream(cluster: str) -> str:
    return f"{PREFIX}:{{{cluster}}}:requests"


def control_hash(cluster: str) -> str:
    return f"{PREFIX}:{{{cluster}}}:control"


def decisions_stream(cluster: str) -> str:
    return f"{PREFIX}:{{{cluster}}}:decisions"


def leader_key(cluster: str) -> str:
    return f"{PREFIX}:{{{cluster}}}:leader"


def ratelimit_key(cluster: str, tenant: str, kind: str) -> str:
    """token bucket state (hash: tokens, ts_ms) for one tenant and limit kind (rpm|tpm)."""
    return f"{PREFIX}:{{{cluster}}}:rl:{tenant}:{kind}"


def inflight_key(cluster: str, tenant: str) -> str:
    """zset of in-flight request ids → lease expiry ms, for max_concurrency."""
    return f"{PREFIX}:{{{cluster}}}:inflight:{tenant}"


def released_key(cluster: str, tenant: str) -> str:
    """zset of request ids released with a tombstone → tombstone expiry ms: an acquire of
    one of them that runs late (its client timed out and released) takes no slot."""
    return f"{PREFIX}:{{{cluster}}}:released:{tenant}"


TENANTS = f"{PREFIX}:tenants"
APIKEYS = f"{PREFIX}:apikeys"
AUDIT = f"{PREFIX}:audit"
EVENTS_CHANNEL = f"{PREFIX}:events"
