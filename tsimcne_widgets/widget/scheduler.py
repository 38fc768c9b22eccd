"""Hand the newest item from a worker thread to the kernel's event loop, rate-limited.

The trainer thread must never touch Bokeh or ipywidgets (a Bokeh document is
not thread-safe, and comm messages sent from threads have broken in some
ipykernel releases).  :class:`LatestOnlyScheduler` is the only bridge: the
worker calls :meth:`~LatestOnlyScheduler.submit`, which stores the item (an
older pending item is simply replaced) and asks the loop, through
``call_soon_threadsafe``, to run ``apply(item)`` on the loop's own thread.

Applies are paced by their own cost as well as by ``min_interval``: the kernel
thread shares the CPU (and the GIL) with training, so a redraw that takes
0.1 s of CPU must not run four times a second (see ``max_busy_fraction``).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["LatestOnlyScheduler", "kernel_event_loop"]


def kernel_event_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the calling (main) thread, or None outside a kernel.

    Inside a Jupyter cell, ipykernel's asyncio loop is running on the main
    thread; older ipykernels expose it as ``kernel.io_loop`` (a tornado
    IOLoop wrapping asyncio).  A plain script has no running loop: then the
    caller must pump pending items itself (:meth:`LatestOnlyScheduler.flush`).
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return None
    shell = get_ipython()
    io_loop = getattr(getattr(shell, "kernel", None), "io_loop", None)
    loop = getattr(io_loop, "asyncio_loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
        return loop
    return None


class LatestOnlyScheduler:
    """Apply the newest submitted item on an event loop, at most every ``min_interval`` s.

    Parameters
    ----------
    apply : callable
        ``apply(item)``; runs on the loop's thread (or the thread calling
        :meth:`flush`), never on the submitting thread.
    loop : asyncio.AbstractEventLoop or None
        Loop to run ``apply`` on.  None (no kernel): items wait for
        :meth:`flush`.
    min_interval : float
        Seconds between two applies.  A newer item is never dropped: it is
        applied at most ``max(min_interval, max_interval)`` after the previous
        apply, so every epoch's snapshot is either shown or superseded by a
        newer one.
    on_error : callable or None
        ``on_error(exception)`` when ``apply`` raises; the scheduler keeps
        working.  None re-raises (into the loop's exception handler).
    max_busy_fraction : float
        At most this fraction of the time goes to applying, in (0, 1]: after
        an apply that took ``c`` CPU seconds (the median of the last few),
        the next waits at least ``c * (1 / max_busy_fraction - 1)`` seconds.
        1 turns the pacing off.
    max_interval : float
        The pacing never holds a newer item back longer than this many
        seconds after the previous apply began (``min_interval`` still
        applies), so the map keeps moving however slow a redraw is.

    Notes
    -----
    At most one loop callback is outstanding at any time, whatever the
    submission rate, so a fast trainer cannot flood the kernel.
    """

    def __init__(
        self,
        apply: Callable[[Any], object],
        loop: asyncio.AbstractEventLoop | None = None,
        min_interval: float = 0.25,
        on_error: Callable[[BaseException], object] | None = None,
        max_busy_fraction: float = 0.05,
        max_interval: float = 2.0,
    ) -> None:
        if not callable(apply):
            raise TypeError("apply must be callable")
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        if not 0 < max_busy_fraction <= 1:
            raise ValueError(f"max_busy_fraction must be in (0, 1], got {max_busy_fraction}")
        if max_interval < 0:
            raise ValueError(f"max_interval must be >= 0, got {max_interval}")
        self._apply = apply
        self.loop = loop
        self.min_interval = float(min_interval)
        self._on_error = on_error
        self._lock = threading.Lock()
        self._pending: Any = None
        self._has_pending = False
        self._scheduled = False
        self.max_busy_fraction = float(max_busy_fraction)
        self.max_interval = float(max_interval)
        self._last_apply = float("-inf")
        self._last_apply_end = float("-inf")
        # A median of recent costs: one slow apply (numba compiling datashader's
        # kernels, a garbage collection) must not hold the next updates back.
        self._costs: deque[float] = deque(maxlen=5)
        self.applied = 0

    @property
    def has_pending(self) -> bool:
        """bool : Whether an item waits to be applied."""
        with self._lock:
            return self._has_pending

    def submit(self, item: Any) -> None:
        """Store ``item`` as the newest and make sure an apply is on its way (any thread)."""
        with self._lock:
            self._pending = item
            self._has_pending = True
            if self._scheduled or self.loop is None:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._arm)
        except RuntimeError:
            # The loop is closed (kernel shutting down): leave the item for flush().
            with self._lock:
                self._scheduled = False

    def next_delay(self) -> float:
        """Seconds until an apply may run (0 or less: now), from the rate limit and pacing."""
        with self._lock:
            last_start, last_end, costs = self._last_apply, self._last_apply_end, list(self._costs)
        now = time.monotonic()
        delay = last_start + self.min_interval - now
        if costs and self.max_busy_fraction < 1:
            idle = statistics.median(costs) * (1.0 / self.max_busy_fraction - 1.0)
            paced = min(last_end + idle, last_start + self.max_interval)
            delay = max(delay, paced - now)
        return delay

    def _arm(self) -> None:
        delay = self.next_delay()
        if delay > 0:
            self.loop.call_later(delay, self._run)
        else:
            self._run()

    def _run(self) -> None:
        with self._lock:
            self._scheduled = False
        self.flush()

    def flush(self) -> bool:
        """Apply the pending item now, on the calling thread.

        Returns
        -------
        bool
            Whether there was an item to apply.
        """
        with self._lock:
            if not self._has_pending:
                return False
            item, self._pending, self._has_pending = self._pending, None, False
            self._last_apply = time.monotonic()
        # CPU time of this thread, not wall time: on a busy machine the wall time
        # of an apply also counts the time the training threads held the cores.
        cpu_started = time.thread_time()
        try:
            self._apply(item)
        except Exception as error:  # noqa: BLE001 - reported, the loop must survive
            if self._on_error is None:
                raise
            self._on_error(error)
        finally:
            with self._lock:
                self._costs.append(time.thread_time() - cpu_started)
                self._last_apply_end = time.monotonic()
            self.applied += 1
        return True

    def discard(self) -> None:
        """Forget the pending item (e.g. after a restart)."""
        with self._lock:
            self._pending, self._has_pending = None, False
