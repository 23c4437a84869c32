"""What asynchronous launches still use: kept alive until the GPU is done with it.

A launch that returns before its kernel ran must not let the memory it reads or writes go: a
PyTorch tensor handed over through DLPack goes back to PyTorch's caching allocator when its
last reference dies, and could be given to other work on another stream while the kernel still
runs. So each asynchronous launch leaves here what it uses (DLPack holders, the objects of the
CUDA Array Interface, the session's buffers), and they are released once an event recorded after
the launch has completed, or at the next ``Session.synchronize()``.

Events are recorded per batch of launches (one per stream used in the batch), not per launch:
recording costs about as much as a launch, and a batch of at most ``BATCH`` launches delays the
release only a little.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, List, Tuple

BATCH = 32


class Inflight:
    def __init__(self, lib: Any, ctx: Any) -> None:
        self._lib, self._ctx = lib, ctx
        self._lock = threading.Lock()
        self._seq = 0  # launches added so far; a synchronisation covers those added before it began
        self._open: List[Tuple[int, int, Any]] = []  # (seq, stream, what the launch uses), no event yet
        self._closed: Deque[Tuple[int, List[Any], List[Any]]] = deque()  # (last seq, events, kept objects)

    @property
    def pending(self) -> bool:
        """Whether any asynchronous launch may still run (so host copies must wait first)."""
        with self._lock:
            return bool(self._open or self._closed)

    def mark(self) -> int:
        """Taken before a synchronisation starts: ``done(mark)`` then releases only what it covered
        (another thread may launch while this one waits)."""
        with self._lock:
            return self._seq

    def add(self, stream: int, keep: List[Any]) -> None:
        with self._lock:
            self._seq += 1
            self._open.append((self._seq, stream, keep))
            if len(self._open) >= BATCH:
                self._close()
            self._reap()

    def _close(self) -> None:
        streams = sorted({s for _, s, _ in self._open})
        events = [self._lib.event_record(self._ctx, s) for s in streams]
        self._closed.append((self._open[-1][0], events, [k for _, _, k in self._open]))
        self._open = []

    def _reap(self) -> None:
        while self._closed and all(self._lib.event_query(e) for e in self._closed[0][1]):
            self._closed.popleft()

    def done(self, mark: int) -> None:
        """The context was synchronised after ``mark()``: what was launched up to it is finished."""
        with self._lock:
            self._open = [e for e in self._open if e[0] > mark]
            while self._closed and self._closed[0][0] <= mark:
                self._closed.popleft()

    def reap(self, stream: int) -> None:
        """A stream was synchronised: close the batch so its events can say what finished."""
        with self._lock:
            if self._open:
                self._close()
            self._reap()
