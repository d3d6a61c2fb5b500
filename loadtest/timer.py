"""Waking the scheduler at a request's intended time, precisely and without burning CPU.

uvloop's timers (libuv) count whole milliseconds, and a sub-millisecond ``asyncio.sleep``
becomes a zero-delay timer: a loop of ``await asyncio.sleep(due - now)`` therefore spins
through the event loop for the last fraction of every interval. At 2,000 req/s that is
nearly a whole core, taken from the server under test on a small machine.

Two wakers, both on ``time.perf_counter`` (``CLOCK_MONOTONIC`` on Linux):

- ``timerfd`` (Linux): one kernel timerfd armed at the absolute intended time and watched by
  the event loop like any socket. The loop sleeps in ``epoll_wait`` and wakes when the timer
  fires, to within tens of microseconds. No spinning.
- ``sleep`` (anywhere): sleeps whole milliseconds, rounded up so that it never spins, then
  optionally spins (``spin_us``, yielding to the loop so I/O is still served) for the last
  stretch.

``auto`` picks ``timerfd`` where the kernel has it.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import sys
import time
from typing import Protocol

TIMERS: tuple[str, ...] = ("auto", "timerfd", "sleep")

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class Waker(Protocol):
    async def wait_until(self, when: float) -> None:
        """Returns at or after ``when`` (a ``time.perf_counter`` value)."""

    def close(self) -> None: ...


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerFdWaker:
    """A Linux timerfd watched by the event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p]
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._loop = loop
        self._spec = _Itimerspec()
        self._waiter: asyncio.Future[None] | None = None
        # perf_counter is CLOCK_MONOTONIC here; the offset guards against another source.
        self._offset = time.clock_gettime(time.CLOCK_MONOTONIC) - time.perf_counter()
        loop.add_reader(fd, self._fired)

    async def wait_until(self, when: float) -> None:
        if when <= time.perf_counter():
            return
        mono = when + self._offset
        sec = math.floor(mono)
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = min(999_999_999, int((mono - sec) * 1e9))
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        # A kernel timer never fires early; the loop below in the caller re-checks anyway.

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class SleepWaker:
    """Whole-millisecond loop timers, rounded up, plus an optional bounded spin."""

    def __init__(self, spin_us: float = 0.0) -> None:
        self._spin_s = spin_us / 1e6

    async def wait_until(self, when: float) -> None:
        while (delay := when - time.perf_counter()) > 0:
            if delay <= self._spin_s:
                await asyncio.sleep(0)  # one loop iteration: I/O is served while spinning
                continue
            # Rounded up to whole milliseconds: uvloop turns a fraction into a zero delay,
            # which would spin through the loop until due.
            await asyncio.sleep(math.ceil((delay - self._spin_s) * 1000) / 1000)

    def close(self) -> None:
        return None


def make_waker(kind: str, loop: asyncio.AbstractEventLoop, spin_us: float = 0.0) -> Waker:
    if kind in ("auto", "timerfd") and sys.platform.startswith("linux"):
        try:
            return TimerFdWaker(loop)
        except (OSError, AttributeError):
            if kind == "timerfd":
                raise
    elif kind == "timerfd":
        raise OSError("timerfd needs Linux")
    return SleepWaker(spin_us)
