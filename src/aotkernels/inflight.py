"""What asynchronous launches still use: kept alive until the GPU is done with it.

A launch that returns before its kernel ran must not let the memory it reads or writes go: a
PyTorch tensor handed over through DLPack goes back to PyTorch's caching allocator when its
last reference dies, and could be given to other work on another stream while the kernel still
runs. So each asynchronous launch leaves here what it uses (DLPack holders, the arrays, the
session's buffers), and they are released once an event recorded after the launch has completed,
or at the next ``Session.synchronize()``.

Nothing here touches a caller's stream after the call that named it has returned (issue 26: a
CuPy stream synchronised and dropped, a cuda.core stream closed, a raw stream destroyed under a
``torch.cuda.ExternalStream``, then an event recorded on it later crashed the process):

- A launch on a stream of the caller (any handle but 0 and 1, the per-thread default stream 2
  included) gets an event of its own, from a pool, recorded on that stream by ``add``, which
  ``Session.launch`` calls right after the launch, inside the same call: the caller's stream
  exists then, whatever the caller does with it afterwards. From then on only the event is used
  (queried, recorded again for a later launch), never the stream. This is safe for an int handle
  the caller destroys the moment the call returns: CUDA lets an event outlive the stream it was
  recorded on (the stream's queued work still completes, and querying the event says when), and
  the handle itself is not kept anywhere.
- Launches on the legacy default stream (handles 0 and 1: the stream PyTorch and CuPy use unless
  told otherwise) are batched, one event per ``BATCH`` launches, recorded on that stream when the
  batch closes, possibly calls later: that stream belongs to the context and is never destroyed.
  Recording costs about as much as a launch, so the common case does not pay it per launch.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, List, Tuple

BATCH = 32
POOL_MAX = 256  # events kept for reuse; more are destroyed with their capsule


class Inflight:
    def __init__(self, lib: Any, ctx: Any) -> None:
        self._lib, self._ctx = lib, ctx
        self._lock = threading.Lock()
        self._seq = 0  # launches added so far; a synchronisation covers those added before it began
        self._open: List[Tuple[int, Any]] = []  # (seq, what it uses): legacy-stream launches, no event yet
        self._closed: Deque[Tuple[int, Any, Any]] = deque()  # (last seq, event, what it uses), oldest first
        self._pool: List[Any] = []  # events whose work is done, to be recorded again

    @property
    def pending(self) -> bool:
        """Whether any asynchronous launch may still run (so host copies must wait first)."""
        return bool(self._open or self._closed)

    def mark(self) -> int:
        """Taken before a synchronisation starts: ``done(mark)`` then releases only what it covered
        (another thread may launch while this one waits)."""
        return self._seq

    def _event(self, stream: int) -> Any:
        """An event recorded on ``stream`` now (from the pool when one is free); None when ``stream``
        is being captured into a CUDA graph (the extension records nothing then)."""
        if self._pool:
            ev = self._pool[-1]
            if self._lib.event_rerecord(ev, stream) is False:
                return None
            return self._pool.pop()
        return self._lib.event_record(self._ctx, stream)

    def add(self, stream: int, keep: Any) -> None:
        """The launch just queued on ``stream`` uses ``keep``; called inside the launch's call."""
        with self._lock:
            self._seq += 1
            if stream == 0 or stream == 1:
                self._open.append((self._seq, keep))
                if len(self._open) >= BATCH:
                    self._close()
            else:
                try:
                    ev = self._event(stream)
                except RuntimeError:
                    # the launch was queued but no event says when it ends: wait for it here, while
                    # the stream still exists, so that what it uses can be let go safely
                    self._lib.synchronize(self._ctx, stream)
                    raise
                if ev is None:
                    # The stream is being captured into a CUDA graph (torch.cuda.graph, CuPy's or
                    # cuda.core's capture): the kernel runs at each replay, not now, so there is no
                    # run to wait for; as with any CUDA graph, the arrays it uses must live as long
                    # as the graph does. Nothing is recorded or queried here: cuEventQuery on an
                    # event recorded in a capture, or during one, invalidates the capture.
                    return
                self._closed.append((self._seq, ev, keep))
            if self._closed:
                self._reap()

    def _close(self) -> None:
        """Close the legacy-stream batch: one event on the legacy default stream covers it."""
        self._closed.append((self._open[-1][0], self._event(0), [k for _, k in self._open]))
        self._open = []

    def _reap(self) -> None:
        closed, query = self._closed, self._lib.event_query
        while closed and query(closed[0][1]):
            self._recycle(closed.popleft()[1])

    def _recycle(self, ev: Any) -> None:
        if len(self._pool) < POOL_MAX:
            self._pool.append(ev)

    def done(self, mark: int) -> None:
        """The context was synchronised after ``mark()``: what was launched up to it is finished."""
        with self._lock:
            self._open = [e for e in self._open if e[0] > mark]
            keep: Deque[Tuple[int, Any, Any]] = deque()
            for entry in self._closed:  # not in seq order across streams: look at every entry
                if entry[0] <= mark:
                    self._recycle(entry[1])
                else:
                    keep.append(entry)
            self._closed = keep

    def reap(self, stream: int) -> None:
        """A stream was synchronised: close the batch so its events can say what finished."""
        with self._lock:
            if self._open:
                self._close()
            self._reap()
