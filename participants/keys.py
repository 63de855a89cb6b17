"""Every Redis key the participants use, in one place.

SDK bookkeeping lives under `<prefix>:participant:<name>:...`; a service's own domain state lives
under `<prefix>:<name>:...` (see `Context.key`). Saga ids contain no colons (schemas enforce it),
so the parts below cannot run into each other.

Two layouts, as for the orchestrator (docs/PARTICIPANTS.md, "On a Redis Cluster"):

- One Redis: the names above, unchanged since the first release, so the outcomes, done records
  and tombstones an older SDK wrote are the ones this one reads.
- Redis Cluster: the participant's name is wrapped in braces, a hash tag:
  `<prefix>:participant:{<name>}:outcome:<id>`, `<prefix>:{<name>}:stock`. Every key a guarded
  call touches (the three guard keys and the service's own keys from `Context.key`) then hashes
  to one slot, so the call stays one atomic script; the price is that one participant's keys
  live on one master (different participants spread over the masters).

The layout follows the client: a `RedisCluster` client gets the cluster layout (`tagged`). The
key prefix cannot hold braces (Settings' pattern), so the participant's tag is always the first
`{...}` in a key, whatever a service puts in the parts after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.redis import is_cluster


def tagged(redis: Any) -> bool:
    """Whether keys for this client take the cluster layout (a hash tag per participant)."""
    return is_cluster(redis)


def _name(participant: str, cluster: bool) -> str:
    return f"{{{participant}}}" if cluster else participant


@dataclass(frozen=True)
class SdkKeys:
    prefix: str
    participant: str
    #: the Redis Cluster layout: the participant's name as a hash tag (see the module's docstring)
    cluster: bool = False

    @property
    def base(self) -> str:
        return f"{self.prefix}:participant:{_name(self.participant, self.cluster)}"

    def outcome(self, command_id: str) -> str:
        """The stored outcome of one command (JSON); a command seen again re-sends it."""
        return f"{self.base}:outcome:{command_id}"

    def done(self, saga_id: str, step: str, compensation: bool) -> str:
        """The successful outcome of a step's action (or compensation) for a saga, whatever the
        attempt: a later attempt gets the same answer without running the handler again."""
        return f"{self.base}:done:{saga_id}:{step}:{'compensation' if compensation else 'action'}"

    def tombstone(self, saga_id: str, step: str) -> str:
        """Set when a compensation for (saga, step) runs: the forward action is refused after it."""
        return f"{self.base}:tombstone:{saga_id}:{step}"


def group_id(prefix: str, participant: str) -> str:
    """One consumer group per service: replicas of a service compete for commands."""
    return f"{prefix}-participant-{participant}"


def domain_key(prefix: str, participant: str, *parts: str, cluster: bool = False) -> str:
    """A key of the service's own state: `<prefix>:<participant>:<parts...>`, with the
    participant's name as a hash tag in the cluster layout (the slot of its guard keys)."""
    return ":".join((prefix, _name(participant, cluster), *parts))


def key_for(redis: Any, prefix: str, participant: str, *parts: str) -> str:
    """`domain_key` in the layout of `redis`'s deployment (for readers outside a handler, which
    hold a client rather than a `Context`)."""
    return domain_key(prefix, participant, *parts, cluster=tagged(redis))
