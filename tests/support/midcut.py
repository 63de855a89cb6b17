"""A Redis proxy that pulls the cable at the worst moment of a batch: a pipeline of `step.lua`
calls reached Redis and ran there, and its replies are on their way back. The replies are
dropped and every link is closed, so the daemon never learns that its steps were applied.

    proxy = StepCutProxy("127.0.0.1", 6379, step_marker(), wrote_commands)
    await proxy.start()      # point the daemon at 127.0.0.1:proxy.port
    proxy.arm()              # the next step pipeline whose replies `want` cuts the cable
    await proxy.fired.wait()
    proxy.lost_replies()     # what Redis answered to the steps the daemon never saw
    proxy.restore()
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from tests.support.proxy import CuttableProxy


def step_marker() -> bytes:
    """The bytes that open a `step.lua` call on the wire (RESP): EVALSHA and the script's sha,
    so SCRIPT EXISTS (same sha) and the relay's own scripts (other shas) never match."""
    text = resources.files("orchestrator.engine").joinpath("lua", "step.lua").read_text()
    sha = hashlib.sha1(text.encode()).hexdigest().encode()
    return b"$7\r\nEVALSHA\r\n$40\r\n" + sha


@dataclass(frozen=True)
class StepReply:
    """One `step.lua` reply: 1 applied (with the outbox ids of the commands it wrote),
    0 a duplicate, -1 a version conflict; None for an error reply."""

    code: int | None
    outbox_ids: int = 0


def wrote_commands(replies: list[StepReply]) -> bool:
    """A step among `replies` was applied and wrote commands to the outbox."""
    return any(r.code == 1 and r.outbox_ids for r in replies)


class StepCutProxy(CuttableProxy):
    """Once armed, the first chunk of replies to a step pipeline whose complete replies satisfy
    `want` is dropped and the cable pulled; other replies pass."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        marker: bytes,
        want: Callable[[list[StepReply]], bool] = lambda replies: True,
    ) -> None:
        super().__init__(target_host, target_port)
        self.marker = marker
        self.want = want
        self.armed = False
        self.fired = asyncio.Event()
        #: step calls in the request whose replies were dropped (as far as it had been sent)
        self.steps_sent = 0
        #: the replies dropped at the cut (the first chunk Redis sent back)
        self.dropped = b""

    def arm(self) -> None:
        self.armed = True

    def lost_replies(self) -> list[StepReply]:
        """The complete step replies in what was dropped: steps Redis ran for nothing the
        daemon heard of."""
        return _replies(self.dropped)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}
        doomed = 0  # step calls sent on this link since its last replies, once armed

        async def requests() -> None:
            nonlocal doomed
            try:
                while data := await reader.read(65536):
                    if self.armed:
                        doomed += data.count(self.marker)
                    up_writer.write(data)
                    await up_writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                up_writer.close()

        async def replies() -> None:
            nonlocal doomed
            try:
                while data := await up_reader.read(65536):
                    if doomed and self.armed and self.want(_replies(data)):
                        # Redis has run (at least) the first steps of the pipeline: drop their
                        # replies and pull the cable before the daemon reads a byte of them.
                        self.armed = False
                        self.steps_sent, self.dropped = doomed, data
                        self.cut()
                        self.fired.set()
                        return
                    doomed = 0
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(requests(), replies())


def _replies(data: bytes) -> list[StepReply]:
    """The step replies in a chunk of replies; none when it does not start at a reply (a
    pipeline's replies may come in several chunks)."""
    try:
        return [_step_reply(v) for v in parse_resp(data)]
    except ValueError:
        return []


def _step_reply(value: object) -> StepReply:
    if not isinstance(value, list) or not value or not isinstance(value[0], int):
        return StepReply(None)
    return StepReply(value[0], len(value) - 1 if value[0] == 1 else 0)


def parse_resp(data: bytes) -> list[object]:
    """The complete RESP2 replies at the start of `data` (integers, bulk and simple strings,
    errors as `Exception`, arrays); an incomplete last one is left out."""
    out: list[object] = []
    pos = 0
    while True:
        parsed = _one(data, pos)
        if parsed is None:
            return out
        value, pos = parsed
        out.append(value)


def _one(data: bytes, pos: int) -> tuple[object, int] | None:
    end = data.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, head, after = data[pos : pos + 1], data[pos + 1 : end], end + 2
    if kind == b":":
        return int(head), after
    if kind == b"+":
        return head.decode(), after
    if kind == b"-":
        return Exception(head.decode()), after
    if kind == b"$":
        n = int(head)
        if n < 0:
            return None, after
        if len(data) < after + n + 2:
            return None
        return data[after : after + n], after + n + 2
    if kind == b"*":
        items: list[object] = []
        for _ in range(max(int(head), 0)):
            parsed = _one(data, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise ValueError(f"not a RESP2 reply at byte {pos}: {data[pos : pos + 20]!r}")
