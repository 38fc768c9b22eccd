"""Hand the newest item from a worker thread to the kernel's event loop, rate-limited.

The trainer thread must never touch Bokeh or ipywidgets (a Bokeh document is
not thread-safe, and comm messages sent from threads have broken in some
ipykernel releases).  :class:`LatestOnlyScheduler` is the only bridge: the
worker calls :meth:`~LatestOnlyScheduler.submit`, which stores the item (an
older pending item is simply replaced) and asks the loop, through
``call_soon_threadsafe``, to run ``apply(item)`` on the loop's own thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
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
        applied at most ``min_interval`` after the previous apply, so every
        epoch's snapshot is either shown or superseded by a newer one.
    on_error : callable or None
        ``on_error(exception)`` when ``apply`` raises; the scheduler keeps
        working.  None re-raises (into the loop's exception handler).

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
    ) -> None:
        if not callable(apply):
            raise TypeError("apply must be callable")
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        self._apply = apply
        self.loop = loop
        self.min_interval = float(min_interval)
        self._on_error = on_error
        self._lock = threading.Lock()
        self._pending: Any = None
        self._has_pending = False
        self._scheduled = False
        self._last_apply = float("-inf")
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

    def _arm(self) -> None:
        delay = self._last_apply + self.min_interval - time.monotonic()
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
        try:
            self._apply(item)
        except Exception as error:  # noqa: BLE001 - reported, the loop must survive
            if self._on_error is None:
                raise
            self._on_error(error)
        finally:
            self.applied += 1
        return True

    def discard(self) -> None:
        """Forget the pending item (e.g. after a restart)."""
        with self._lock:
            self._pending, self._has_pending = None, False
