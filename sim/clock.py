"""Virtual time and the discrete-event scheduler: everything in a run happens here, in order.

Time is an integer count of virtual milliseconds. Events are kept in a heap of
``(time, seq, callback)``; ``seq`` is a global insertion counter, so two events due at the same
millisecond run in the order they were scheduled and a run is a pure function of its seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["Scheduler", "VirtualClock"]


class VirtualClock:
    """A millisecond clock that only the scheduler moves."""

    __slots__ = ("now",)

    def __init__(self, start_ms: int = 0) -> None:
        self.now = int(start_ms)

    def now_ms(self) -> int:
        return self.now


class Scheduler:
    """A heap of pending events; :meth:`run_until` pops them in (time, seq) order."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self.executed = 0

    def at(self, t_ms: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``t_ms`` (never earlier than now)."""
        t = max(int(t_ms), self.clock.now)
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn))

    def after(self, delay_ms: int, fn: Callable[[], None]) -> None:
        self.at(self.clock.now + max(0, int(delay_ms)), fn)

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, t_end: int, stop: Callable[[], bool] | None = None) -> None:
        """Run every event due at or before ``t_end`` (or until ``stop()`` says so)."""
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            t, _, fn = heapq.heappop(heap)
            self.clock.now = t
            fn()
            self.executed += 1
            if stop is not None and stop():
                return
        self.clock.now = max(self.clock.now, t_end)
