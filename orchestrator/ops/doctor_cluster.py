"""`saga doctor` on a Redis Cluster (SAGA_REDIS_CLUSTER=true): that the configured node is
one (and that a cluster node is not used as a single Redis), which masters serve the 16384
slots and whether every slot is served, and the config check on each master."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis as redis_lib
import redis.exceptions as rex
from redis import Redis

Row = tuple[str, bool, str]

SLOTS = 16384

#: (host, port) of a master -> the slot ranges it serves
Masters = dict[tuple[str, int], list[tuple[int, int]]]


def cluster_mode(client: Redis, cluster_setting: bool, where: str) -> Masters | Row | None:
    """The masters when SAGA_REDIS_CLUSTER is set and the server is a cluster node; None for a
    single Redis as configured; a failing row when the setting and the server disagree (every
    key outside the node's slots would fail with MOVED, or every cluster command with ERR)."""
    try:
        enabled: bool | None = client.info("cluster").get("cluster_enabled") == 1
    except rex.NoPermissionError:
        enabled = None  # a least-privilege user: trust the setting
    if cluster_setting and enabled is False:
        return (
            "redis cluster",
            False,
            f"SAGA_REDIS_CLUSTER=true, but {where} is a single Redis (cluster support "
            "disabled): unset SAGA_REDIS_CLUSTER, or point SAGA_REDIS_URL at a cluster node",
        )
    if not cluster_setting and enabled:
        return (
            "redis cluster",
            False,
            f"{where} is a node of a Redis Cluster, but SAGA_REDIS_CLUSTER is not true: keys in "
            "the other nodes' slots would fail with MOVED; set SAGA_REDIS_CLUSTER=true",
        )
    if not cluster_setting:
        return None
    try:
        return masters_of(client.cluster("SLOTS"))
    except (rex.RedisError, ValueError) as exc:
        return ("redis cluster", False, f"cannot read the cluster's slots from {where}: {exc}")


def masters_of(slots_reply: Any) -> Masters:
    """CLUSTER SLOTS (`[[start, end, [host, port, id, ...], replicas...], ...]`) as the slot
    ranges each master serves. A reply of another shape raises ValueError."""
    masters: Masters = {}
    if not isinstance(slots_reply, list):
        raise ValueError(f"CLUSTER SLOTS answered {type(slots_reply).__name__}, not a list")
    for entry in slots_reply:
        try:
            start, end, node = int(entry[0]), int(entry[1]), entry[2]
            host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
            address = (host, int(node[1]))
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"CLUSTER SLOTS entry {str(entry)[:80]} is not understood") from exc
        if not 0 <= start <= end < SLOTS:
            raise ValueError(f"CLUSTER SLOTS range {start}-{end} is outside 0-{SLOTS - 1}")
        masters.setdefault(address, []).append((start, end))
    return masters


def uncovered(masters: Masters) -> list[tuple[int, int]]:
    """The slot ranges no master serves (commands on keys there fail with CLUSTERDOWN)."""
    ranges = sorted(r for rs in masters.values() for r in rs)
    gaps, nxt = [], 0
    for start, end in ranges:
        if start > nxt:
            gaps.append((nxt, start - 1))
        nxt = max(nxt, end + 1)
    if nxt < SLOTS:
        gaps.append((nxt, SLOTS - 1))
    return gaps


def cluster_row(masters: Masters) -> Row:
    def served(rs: list[tuple[int, int]]) -> int:
        return sum(end - start + 1 for start, end in rs)

    names = ", ".join(f"{h}:{p} ({served(rs)} slots)" for (h, p), rs in sorted(masters.items()))
    gaps = uncovered(masters)
    if gaps:
        shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in gaps[:5])
        more = f" and {len(gaps) - 5} more ranges" if len(gaps) > 5 else ""
        return (
            "redis cluster",
            False,
            f"a Redis Cluster with slots not served by any master: {shown}{more} (keys there "
            f"fail with CLUSTERDOWN; assign them with `redis-cli --cluster fix`); masters: "
            f"{names or 'none'}",
        )
    return (
        "redis cluster",
        True,
        f"a Redis Cluster: all {SLOTS} slots served by {len(masters)} master(s): {names}",
    )


def masters_config_row(client: Redis, masters: Masters, config_row: Callable[[Redis], Row]) -> Row:
    """`config_row` (the doctor's AOF and eviction check) on every master, each of which keeps
    its own settings, with the login and TLS options of the configured node."""
    pool = client.connection_pool
    problems, texts = [], set()
    for host, port in sorted(masters):
        kwargs = {**pool.connection_kwargs, "host": host, "port": port}
        node = redis_lib.Redis(
            connection_pool=pool.__class__(connection_class=pool.connection_class, **kwargs)
        )
        try:
            _, ok, text = config_row(node)
        except (redis_lib.RedisError, OSError) as exc:
            ok, text = False, f"no answer ({type(exc).__name__}: {exc})"
        finally:
            node.close()
        texts.add(text)
        if not ok:
            problems.append(f"{host}:{port}: {text}")
    if problems:
        return ("redis config", False, "; ".join(problems))
    same = texts.pop() if len(texts) == 1 else "; ".join(sorted(texts))
    return ("redis config", True, f"{same} (on every master)")
