"""One reader per API process for every job event stream its clients are watching.

A stream per client, each with its own blocking ``XREAD`` and a record poll every second, ran
out of pooled Redis connections at about 100 streams and made idle streams cost CPU. The hub
keeps one ``XREAD BLOCK <ms> STREAMS k1 k2 ... id1 id2 ...`` on one connection for all
watched streams, fans events out to bounded per-listener queues, and once a period checks
the records of the jobs that stayed idle in one pipeline (ended, failed, past the deadline).
Keep-alive comments come from each listener's own timer, not from the hub.

* A new listener first reads what its stream already holds (``XRANGE`` on the request client),
  then subscribes from the last id it has. When the pending ``XREAD`` does not cover that
  position (a new job, or an older cursor), the listener appends to this process's wake-up
  stream, which that ``XREAD`` also watches: the read returns and restarts with the new set.
* A listener receives an event only from a read that started at or before its own position,
  and only once (it remembers the last id it got), so rereading never skips or repeats.
* A listener whose queue fills (its client reads slower than events arrive) is dropped with an
  error event; it can reconnect with ``Last-Event-ID`` and resume.
* Each period the same pipeline marks every watched job as listened to (``keys.listeners``,
  for ``listen_s`` plus two periods, so that a late tick never lets it lapse): a worker cancels
  a job whose key has expired. With nothing watched, nothing is refreshed.
* A job this process runs itself (``typeahead.generation.inline``) hands its events to the listeners
  here at once (``publish``), under the ids it stores them with; the reader's copy of them
  from Redis is then a repeat that every listener skips.
* Redis failing (down, or stalled past the read timeout) is waited out for ``outage_s``
  (10 s by default): the streams stay open on their keep-alives, and once Redis answers the
  read resumes from each stream's cursor, so no event is lost or repeated, and the next idle
  check marks the watched jobs as listened to again before their mark lapses (it lasts
  ``listen_s`` plus two periods). An outage longer than that ends every open stream with an
  error event. The hub keeps running and, with nobody listening, makes no Redis calls at all;
  new streams are served once Redis is back.
* On a Redis Cluster one ``XREAD`` must stay in one hash slot: ``ShardedHub`` runs one such
  reader per queue shard (a shard's token streams share its hash tag, and so does the
  reader's wake-up stream), each idle and without a connection while its shard has nothing
  watched.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from typeahead import keys
from typeahead.generation.queue import REDIS_DOWN, Event, Jobs, stream_id

log = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"
FINAL_EVENTS = ("done", "error")
REDIS_LOST = "the generation store (Redis) became unreachable"
TOO_SLOW = "the client fell too far behind the event stream; reconnect with Last-Event-ID"
SHUTDOWN = "the server is shutting down; reconnect with Last-Event-ID"
# A job still queued or running this long after its deadline has no worker left: end it.
DEADLINE_GRACE_S = 5.0
# Fan-out yields to the event loop after this many queued chunks: a thousand keep-alives
# written in one go would hold up every other request for several milliseconds.
FANOUT_SLICE = 64
OUTAGE_S = 10.0  # how long open streams wait out a Redis outage before they end
RETRY_S = 0.25  # between reads while Redis does not answer

Item = tuple[bytes, bool]  # an SSE chunk, and whether it ends the stream


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id else []
    lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def ending_event(record: dict[str, str], now: float) -> bytes | None:
    """The final event for an idle job whose stream will not grow any more, else None."""
    if not record:
        return sse("error", "the job expired or was lost")
    status = record.get("status")
    if status == "failed":
        return sse("error", record.get("error", "generation failed"))
    if status == "done" and record.get("result"):
        return sse("done", record["result"])
    try:
        deadline = float(record.get("deadline", 0))
    except ValueError:
        deadline = 0.0
    if now > deadline + DEADLINE_GRACE_S:
        return sse("error", "deadline exceeded: no worker finished the job in time")
    return None


@dataclass(eq=False)
class Listener:
    """One client's view of one job's events: a bounded queue of SSE chunks to write."""

    job: str
    last: tuple[int, int]  # the id of the last event queued for it
    queue: asyncio.Queue[Item]
    fed: bool = False  # something was queued since the last keep-alive tick
    _timer: asyncio.TimerHandle | None = None

    def keep_alive(self, period_s: float) -> None:
        """Queue a keep-alive comment each period in which nothing else was queued.

        Each stream ticks on its own timer, so keep-alives spread over the period by when the
        streams started, instead of a thousand writes at once that would hold up every other
        request of the process for milliseconds."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if not self.fed and self.queue.empty():  # else a write is pending anyway
                self.queue.put_nowait((KEEP_ALIVE, False))
            self.fed = False
            self._timer = loop.call_later(period_s, tick)

        self._timer = loop.call_later(period_s, tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def next(self) -> Item:
        """Every chunk queued so far, joined into one write, and whether it ends the stream."""
        chunk, final = await self.queue.get()
        parts = [chunk]
        while not final and not self.queue.empty():
            chunk, final = self.queue.get_nowait()
            parts.append(chunk)
        return b"".join(parts), final


@dataclass(eq=False)
class _Watch:
    cursor: str  # where the next read of this job's stream starts
    listeners: set[Listener] = field(default_factory=set)
    active: bool = False  # saw an event since the last idle check


def _put_final(listener: Listener, item: Item) -> None:
    """Queue a stream's last chunk. With no room left, drop everything it has not written yet
    (never just the oldest: that would leave a gap a Last-Event-ID resume cannot see)."""
    listener.stop()
    if listener.queue.full():
        while not listener.queue.empty():
            listener.queue.get_nowait()
    listener.queue.put_nowait(item)


class StreamHub:
    """Follows every watched job's event stream for one process; see the module docstring."""

    def __init__(
        self, reader: Jobs, jobs: Jobs, *, period_s: float = 1.0, queue_size: int = 1024,
        count: int = 512, listen_s: float = 0.0, outage_s: float = OUTAGE_S, shard: int = 0,
    ) -> None:
        self._reader = reader  # its own client: the one connection the blocking read holds
        self._jobs = jobs  # the request client: idle checks and wake-ups
        self._layout = reader.layout
        self.period_s = period_s  # keep-alive period and the longest read
        self.queue_size = queue_size
        self.count = count
        # How long each tick's mark of the watched jobs lasts (0: jobs are never marked).
        self.listen_ttl_s = listen_s + 2 * period_s if listen_s > 0 else 0.0
        self._wake_key = self._layout.hub_wake(uuid.uuid4().hex, shard)
        self._wake_cursor = "0-0"
        self._watches: dict[str, _Watch] = {}
        self._reading: dict[str, str] | None = None  # the cursors of the read in flight
        self._woken = False  # a wake-up was sent for the read in flight
        self._changed = asyncio.Event()
        self._next_check = 0.0
        self._task: asyncio.Task[None] | None = None
        self._offered = 0
        self.outage_s = outage_s
        self._down_since: float | None = None  # when Redis stopped answering the reader
        self.reads = 0  # XREAD calls made, for tests and metrics
        self.checks = 0  # idle-check pipelines made

    @property
    def listeners(self) -> int:
        return sum(len(w.listeners) for w in self._watches.values())

    @property
    def watched(self) -> int:
        return len(self._watches)

    def start(self) -> None:
        self._next_check = asyncio.get_running_loop().time() + self.period_s
        self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._end_all(SHUTDOWN)

    # --- listeners --------------------------------------------------------------------------

    async def subscribe(self, job: str, after: str) -> Listener:
        """Start delivering ``job``'s events after stream id ``after`` (a valid id)."""
        position = stream_id(after) or (0, 0)
        listener = Listener(job, position, asyncio.Queue(self.queue_size))
        watch = self._watches.get(job)
        if watch is None:
            watch = self._watches[job] = _Watch(after)
        elif position < (stream_id(watch.cursor) or (0, 0)):
            watch.cursor = after  # reread from here; the others skip what they already have
        watch.listeners.add(listener)
        listener.keep_alive(self.period_s)
        self._changed.set()
        if self._needs_wake(job, position):
            self._woken = True
            try:
                await self._jobs.wake(self._wake_key, keys.HUB_WAKE_TTL_S)
            except BaseException:
                self.unsubscribe(listener)
                raise
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        listener.stop()
        watch = self._watches.get(listener.job)
        if watch is None:
            return
        watch.listeners.discard(listener)
        if not watch.listeners:
            del self._watches[listener.job]

    def publish(self, job: str, after: str, event: Event) -> None:
        """Hand an event of a job this process runs (inline) to its listeners here before
        Redis has it: the tokens reach the clients without a round trip. The job numbers its
        events and stores them in the same order, so this is the event Redis will hold right
        after ``after``. Only a listener whose last event is exactly ``after`` takes it; one
        behind (it joined between the store and this call) catches up from Redis, through
        the reader, with no gap and no repeat, because every listener remembers its last id."""
        watch = self._watches.get(job)
        if watch is None:
            return
        previous, position = stream_id(after), stream_id(event.id)
        if previous is None or position is None:
            return
        if watch.cursor == after:
            watch.cursor = event.id  # the reader need not fetch it back
        watch.active = True
        item = (sse(event.type, event.data, event.id), event.type in FINAL_EVENTS)
        for listener in list(watch.listeners):
            if listener.last == previous:
                listener.last = position
                self._offer(watch, listener, item)
                if item[1]:
                    watch.listeners.discard(listener)
        if not watch.listeners:
            self._forget(job, watch)

    def _needs_wake(self, job: str, position: tuple[int, int]) -> bool:
        reading = self._reading
        if reading is None or self._woken:
            return False  # not blocked, or already told to restart
        cursor = reading.get(self._layout.tokens(job))
        return cursor is None or position < (stream_id(cursor) or (0, 0))

    # --- the reader -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._watches:
                self._changed.clear()
                await self._changed.wait()
                self._next_check = loop.time() + self.period_s
                continue
            try:
                await self._step(loop)
                self._down_since = None
            except REDIS_DOWN:
                await self._wait_out(loop)
            except RedisError as exc:
                self._end_all(f"generation store error: {exc}")
            except Exception:  # a bug must not leave every stream hanging
                log.exception("the event stream reader failed")
                self._end_all("internal error while following the event stream")
                await asyncio.sleep(0.1)

    async def _wait_out(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the streams through a short outage; end them once it lasts ``outage_s``."""
        now = loop.time()
        if self._down_since is None:
            self._down_since = now
            log.warning("the event stream reader lost Redis; streams stay open for %.0f s",
                        self.outage_s)
        if now - self._down_since >= self.outage_s:
            self._down_since = None
            self._end_all(REDIS_LOST)
            return
        await asyncio.sleep(RETRY_S)

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.time() >= self._next_check:
            await self._check_idle()
            self._next_check = loop.time() + self.period_s
            if not self._watches:
                return
        streams = {self._layout.tokens(job): job for job in self._watches}
        cursors = {key: self._watches[job].cursor for key, job in streams.items()}
        cursors[self._wake_key] = self._wake_cursor
        wait_ms = max(1, int((self._next_check - loop.time()) * 1000))
        self._reading, self._woken = cursors, False
        try:
            self.reads += 1
            got = await self._reader.read_streams(cursors, block_ms=wait_ms, count=self.count)
        finally:
            self._reading = None
        wake = got.pop(self._wake_key, None)
        if wake:
            self._wake_cursor = wake[-1].id
        for key, events in got.items():
            if key in streams and events:
                await self._deliver(streams[key], cursors[key], events)

    async def _deliver(self, job: str, read_from: str, events: list[Event]) -> None:
        watch = self._watches.get(job)
        if watch is None:
            return
        if watch.cursor == read_from:  # not rewound by a new listener meanwhile
            watch.cursor = events[-1].id
        watch.active = True
        start = stream_id(read_from) or (0, 0)
        for ev in events:
            position = stream_id(ev.id) or (0, 0)
            item = (sse(ev.type, ev.data, ev.id), ev.type in FINAL_EVENTS)
            for listener in list(watch.listeners):
                # Only a read that began at or before a listener's position continues it.
                if start <= listener.last < position:
                    listener.last = position
                    self._offer(watch, listener, item)
                    if item[1]:
                        watch.listeners.discard(listener)
                    await self._pace()
        if not watch.listeners:
            self._forget(job, watch)

    async def _pace(self) -> None:
        self._offered += 1
        if self._offered % FANOUT_SLICE == 0:
            await asyncio.sleep(0)

    def _offer(self, watch: _Watch, listener: Listener, item: Item) -> None:
        if item[1]:
            _put_final(listener, item)
            return
        listener.fed = True
        try:
            listener.queue.put_nowait(item)
        except asyncio.QueueFull:
            watch.listeners.discard(listener)
            _put_final(listener, (sse("error", TOO_SLOW), True))

    def _forget(self, job: str, watch: _Watch) -> None:
        if self._watches.get(job) is watch:
            del self._watches[job]

    async def _check_idle(self) -> None:
        """One pipeline for every job without events this period (is its stream over?) that
        also marks every watched job as listened to."""
        idle = [job for job, w in self._watches.items() if not w.active]
        for w in self._watches.values():
            w.active = False
        if not idle and not self.listen_ttl_s:
            return
        self.checks += 1
        records = await self._jobs.endings(idle, listened=list(self._watches),
                                           listen_s=self.listen_ttl_s)
        now = time.time()
        for job, record in zip(idle, records, strict=True):
            watch = self._watches.get(job)
            if watch is None:
                continue
            ending = ending_event(record, now)
            if ending is None:
                continue
            for listener in list(watch.listeners):
                _put_final(listener, (ending, True))
                await self._pace()
            self._forget(job, watch)

    def _end_all(self, message: str) -> None:
        item = (sse("error", message), True)
        for watch in self._watches.values():
            for listener in watch.listeners:
                _put_final(listener, item)
        self._watches.clear()


class ShardedHub:
    """A ``StreamHub`` per queue shard, behind the one hub's interface (Redis Cluster)."""

    def __init__(self, reader: Jobs, jobs: Jobs, **options: Any) -> None:
        self._layout = reader.layout
        self._hubs = [StreamHub(reader, jobs, shard=shard, **options)
                      for shard in range(self._layout.shards)]
        first = self._hubs[0]
        self.period_s, self.listen_ttl_s, self.outage_s = (
            first.period_s, first.listen_ttl_s, first.outage_s)

    def _hub(self, job: str) -> StreamHub:
        return self._hubs[self._layout.shard(job)]

    @property
    def listeners(self) -> int:
        return sum(hub.listeners for hub in self._hubs)

    @property
    def watched(self) -> int:
        return sum(hub.watched for hub in self._hubs)

    @property
    def reads(self) -> int:
        return sum(hub.reads for hub in self._hubs)

    @property
    def checks(self) -> int:
        return sum(hub.checks for hub in self._hubs)

    def start(self) -> None:
        for hub in self._hubs:
            hub.start()

    async def close(self) -> None:
        await asyncio.gather(*(hub.close() for hub in self._hubs))

    async def subscribe(self, job: str, after: str) -> Listener:
        return await self._hub(job).subscribe(job, after)

    def unsubscribe(self, listener: Listener) -> None:
        self._hub(listener.job).unsubscribe(listener)

    def publish(self, job: str, after: str, event: Event) -> None:
        self._hub(job).publish(job, after, event)


def make_hub(reader: Jobs, jobs: Jobs, **options: Any) -> StreamHub | ShardedHub:
    """The event-stream hub for the store's layout: one reader, or one per shard."""
    if reader.layout.shards == 1:
        return StreamHub(reader, jobs, **options)
    return ShardedHub(reader, jobs, **options)


Hub = StreamHub | ShardedHub
