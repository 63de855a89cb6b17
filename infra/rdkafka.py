"""The hot path's Kafka client: confluent-kafka (librdkafka) behind the small async surface the
daemon and the participant workers use.

Why not `confluent_kafka.aio` or aiokafka: measured on this box (docs/PERFORMANCE.md), the
synchronous librdkafka clients driven from the event loop cost a third of aiokafka's CPU per
step, and the aio wrapper was slower than both. So:
- the consumer lives on one thread of its own: `consume` (which blocks, GIL released, and runs
  the rebalance callbacks) and `commit` are handed to that thread one after the other, so the
  event loop never blocks and the consumer is never used by two threads at once (reads of
  cached figures for `/metrics` excepted: librdkafka serves those from any thread);
- the rebalance callbacks run on that thread and wait for the async listener they call on the
  loop, so a revoke still lets the batch in flight finish and commit before the partitions move
  (the loop is free: it is waiting for `consume`);
- the producer's `produce` is called on the loop (it only queues); a thread of its own polls for
  delivery reports and hands each poll's reports to the loop in one wake-up, which settles the
  futures `send` returned.
Records come out as `Record` (the fields of aiokafka's ConsumerRecord the code reads), topic
partitions as the `TopicPartition` tuple, errors as `KafkaClientError` (classified in
`infra/errors.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeVar

import confluent_kafka as ck

log = logging.getLogger("infra.kafka")
T = TypeVar("T")
#: how long a `start` waits for the cluster's metadata before it counts as away
CONNECT_TIMEOUT_S = 10.0
#: how long the poll thread sleeps in librdkafka when no delivery report is due
POLL_S = 0.2
#: how long `stop` lets queued records reach Kafka
FLUSH_S = 10.0


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int


class Record:
    """One consumed record (raw bytes; nothing is deserialized inside the client)."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, msg: ck.Message) -> None:
        # a consumed message always has these (only error events lack them, never made Records)
        self.topic: str = msg.topic()  # type: ignore[assignment]
        self.partition: int = msg.partition()  # type: ignore[assignment]
        self.offset: int = msg.offset()  # type: ignore[assignment]
        self.key = msg.key()
        self.value = msg.value()
        self.headers: list[tuple[str, bytes]] = msg.headers() or []  # type: ignore[assignment]
        self.timestamp: int = msg.timestamp()[1]


class KafkaClientError(Exception):
    """A librdkafka error: `code` is a `confluent_kafka.KafkaError` code, `retriable` what
    librdkafka says of it (`infra.errors` decides what the project retries)."""

    def __init__(self, error: ck.KafkaError, what: str = "") -> None:
        super().__init__(f"{what}{': ' if what else ''}{error.name()}: {error.str()}")
        self.error = error
        self.code: int = error.code()
        self.name: str = error.name()
        self.retriable: bool = error.retriable()

    @classmethod
    def of(cls, exc: ck.KafkaException, what: str = "") -> KafkaClientError:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, ck.KafkaError):
            err = ck.KafkaError(ck.KafkaError._FAIL, str(exc))
        return cls(err, what)


def _wrapped(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except ck.KafkaException as exc:
        raise KafkaClientError.of(exc, what) from None


class Listener(Protocol):
    """What a consumer tells about a rebalance (the shape of aiokafka's listener)."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None: ...
    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...


def _tps(partitions: Iterable[ck.TopicPartition]) -> set[TopicPartition]:
    return {TopicPartition(p.topic, p.partition) for p in partitions}


class Producer:
    """An async face on `confluent_kafka.Producer`: `await send(...)` queues a record and gives
    a future that settles with its `RecordMetadata` or a `KafkaClientError`."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self._p: ck.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        #: delivery reports of the running poll, collected on the poll thread
        self._reports: list[tuple[asyncio.Future[RecordMetadata], Any, Any]] = []
        self._room = asyncio.Event()  # set when reports freed room in a full local queue

    async def start(self) -> None:
        """Connect; `KafkaClientError` when the cluster does not answer in time."""
        self._loop = asyncio.get_running_loop()
        p = self._p = _wrapped("producer", ck.Producer, self.conf)
        try:
            await asyncio.to_thread(_wrapped, "connect", p.list_topics, None, CONNECT_TIMEOUT_S)
        except BaseException:
            self._p = None
            raise
        self._closing.clear()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        assert self._p is not None and self._loop is not None
        while not self._closing.is_set():
            self._p.poll(POLL_S)  # delivery callbacks run here, into `_reports`
            self._hand_over()

    def _hand_over(self) -> None:
        reports, self._reports = self._reports, []
        if reports and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._settle, reports)

    def _delivered(self, fut: asyncio.Future[RecordMetadata], err: Any, msg: Any) -> None:
        self._reports.append((fut, err, msg))

    def _settle(self, reports: list[tuple[asyncio.Future[RecordMetadata], Any, Any]]) -> None:
        for fut, err, msg in reports:
            if fut.done():
                continue
            if err is not None:
                fut.set_exception(KafkaClientError(err, "delivery"))
            else:
                fut.set_result(RecordMetadata(msg.topic(), msg.partition(), msg.offset()))
        self._room.set()

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue a record; raises `KafkaClientError` when librdkafka refuses it at once (too
        large, closed). A full local queue waits for deliveries to make room."""
        p = self._p
        if p is None or self._loop is None:
            raise KafkaClientError(ck.KafkaError(ck.KafkaError._STATE, "producer not started"))
        fut: asyncio.Future[RecordMetadata] = self._loop.create_future()
        callback = partial(self._delivered, fut)
        while True:
            try:
                hs: Any = list(headers) if headers else None
                p.produce(topic, value, key, headers=hs, on_delivery=callback)
                return fut
            except BufferError:  # the local queue is full: wait for a round of deliveries
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), POLL_S)
            except ck.KafkaException as exc:
                raise KafkaClientError.of(exc, "produce") from None

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> RecordMetadata:
        return await (await self.send(topic, value, key, headers))

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partition ids; `KafkaClientError` when Kafka does not know it."""
        p = self._p
        assert p is not None, "producer not started"
        meta = await asyncio.to_thread(
            _wrapped, f"metadata of {topic}", p.list_topics, topic, CONNECT_TIMEOUT_S
        )
        t = meta.topics.get(topic)
        if t is None or t.error is not None:
            err = t.error if t is not None else ck.KafkaError(ck.KafkaError._UNKNOWN_TOPIC)
            raise KafkaClientError(err, f"metadata of {topic}")
        return set(t.partitions)

    async def stop(self) -> None:
        """Deliver what is queued (up to `FLUSH_S`), settle every future, close."""
        p, thread = self._p, self._thread
        if p is None:
            return
        self._closing.set()
        if thread is not None:
            await asyncio.to_thread(thread.join)
        left = await asyncio.to_thread(p.flush, FLUSH_S)
        self._hand_over()
        await asyncio.sleep(0)  # let the hand-over's settle run
        if left:
            log.warning("producer closed with %d records not delivered", left)
        self._p = None


class Consumer:
    """An async face on `confluent_kafka.Consumer`, every call on one thread of its own."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self._c: ck.Consumer | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        self._assigned: set[TopicPartition] = set()

    async def _on_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._loop is not None and self._thread is not None, "consumer not started"
        return await self._loop.run_in_executor(self._thread, partial(fn, *args, **kwargs))

    async def start(self) -> None:
        """Connect; `KafkaClientError` when the cluster does not answer in time."""
        self._loop = asyncio.get_running_loop()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        try:
            c = await self._on_thread(_wrapped, "consumer", ck.Consumer, self.conf)
            self._c = c
            await self._on_thread(_wrapped, "connect", c.list_topics, None, CONNECT_TIMEOUT_S)
        except BaseException:
            await self._close()
            raise

    def subscribe(self, topics: list[str], listener: Listener | None = None) -> None:
        """Subscribe (a name starting with `^` is a pattern); `listener` hears rebalances."""
        assert self._c is not None, "consumer not started"
        self._listener = listener
        _wrapped(
            "subscribe",
            self._c.subscribe,
            topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _wait_on_loop(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a listener callback on the loop and wait for it (on the consumer's thread)."""
        assert self._loop is not None
        try:
            asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        except Exception:
            log.exception("rebalance listener failed")

    def _on_assign(self, c: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        c.assign(partitions)
        tps = _tps(partitions)
        self._assigned |= tps
        if self._listener is not None:
            self._wait_on_loop(self._listener.on_partitions_assigned(tps))

    def _on_revoke(self, c: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        tps = _tps(partitions)
        if self._listener is not None:
            self._wait_on_loop(self._listener.on_partitions_revoked(tps))
        self._assigned -= tps
        with contextlib.suppress(ck.KafkaException):
            c.unassign()

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Up to `max_records` records, waiting up to `timeout_ms` for the first, grouped by
        partition in offset order. Raises `KafkaClientError` on a fatal consumer error."""
        assert self._c is not None, "consumer not started"
        return await self._on_thread(self._consume, max_records or 500, timeout_ms / 1000)

    def _consume(self, n: int, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        c = self._c
        assert c is not None
        # `consume(n, t)` waits for n records or t, whichever comes last on a quiet topic;
        # so: what is there now; else the first record (returned the moment it comes), then
        # what came with it
        msgs = _wrapped("consume", c.consume, n, 0)
        if not msgs:
            first = _wrapped("poll", c.poll, timeout_s)
            if first is None:
                return {}
            msgs = [first, *_wrapped("consume", c.consume, n - 1, 0)] if n > 1 else [first]
        out: dict[TopicPartition, list[Record]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaClientError(err, "consume")
                # librdkafka retries these itself (a broker away, a leader moving): say so
                log.warning("kafka consumer: %s: %s", err.name(), err.str())
                continue
            r = Record(m)
            tp = TopicPartition(r.topic, r.partition)
            if (rs := out.get(tp)) is None:
                out[tp] = [r]
            else:
                rs.append(r)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the next offsets to read, synchronously; `KafkaClientError` when refused."""
        assert self._c is not None, "consumer not started"
        if not offsets:
            return
        parts = [ck.TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]
        await self._on_thread(_wrapped, "commit", self._c.commit, offsets=parts, asynchronous=False)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def topics(self) -> set[str]:
        assert self._c is not None, "consumer not started"
        meta = await self._on_thread(
            _wrapped, "metadata", self._c.list_topics, None, CONNECT_TIMEOUT_S
        )
        return set(meta.topics)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch (no request), None when unknown."""
        assert self._c is not None, "consumer not started"
        part = ck.TopicPartition(tp.topic, tp.partition)
        with contextlib.suppress(ck.KafkaException):
            _, high = self._c.get_watermark_offsets(part, cached=True)
            return high if high >= 0 else None
        return None

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this consumer will read of `tp` (-1001: none yet)."""
        assert self._c is not None, "consumer not started"
        [part] = _wrapped("position", self._c.position, [ck.TopicPartition(tp.topic, tp.partition)])
        return int(part.offset)

    async def stop(self) -> None:
        """Leave the group (a static member keeps its place for a session) and close."""
        await self._close()

    async def _close(self) -> None:
        c, self._c = self._c, None
        if c is not None and self._thread is not None and self._loop is not None:
            with contextlib.suppress(ck.KafkaException, RuntimeError):
                await self._loop.run_in_executor(self._thread, c.close)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None
