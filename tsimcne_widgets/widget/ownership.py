"""Handle the browser's messages for a widget tree on the thread that built it.

JupyterLab 4.6 and Notebook 7.6 send comm messages to a kernel *subshell* by default
(setting "Kernel Comms over subshells": one subshell per comm target), and ipykernel 7
runs every subshell on a thread of its own.  A button click, a dropdown change or a
Bokeh event then runs beside the main thread, which meanwhile runs cells, applies
training snapshots and redraws the map.  Neither a Bokeh ``Document`` nor the explorer's
state is thread-safe: a colour change on the main thread raced a Bokeh message on the
subshell's thread and failed with "Set changed size during iteration" (Bokeh's list of
renderers lost an owner while it notified them).

:class:`MessageOwner` hands every comm message of the widgets it adopts to the event
loop of the owning thread, in arrival order, so the package keeps one thread for all
its UI work.  While a cell runs, the messages wait as they did before subshells (the
browser answers hover and lasso meanwhile; the kernel catches up when free).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable

__all__ = ["MessageOwner"]

_log = logging.getLogger(__name__)


class MessageOwner:
    """Run the comm messages of adopted widgets on ``loop``'s thread.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop or None
        The owning thread's running loop (the kernel's main loop).  None (a script, no
        kernel): messages are handled where they arrive.

    Notes
    -----
    :meth:`adopt` walks a widget tree (``children`` and other widget-valued traits) and
    keeps adopting what is added to its boxes later (gallery cells, table rows).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.thread_id = threading.get_ident()
        self._watched: weakref.WeakSet = weakref.WeakSet()

    def adopt(self, widget) -> None:
        """Adopt ``widget`` and every widget below it (now and added later)."""
        from ipywidgets import Box, Widget

        stack, seen = [widget], set()
        while stack:
            item = stack.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            self._adopt_comm(item)
            if isinstance(item, Box) and item not in self._watched:
                self._watched.add(item)
                item.observe(lambda change: self.adopt_all(change["new"]), "children")
            for name in item.keys:
                value = getattr(item, name, None)
                values = value if isinstance(value, (tuple, list)) else (value,)
                stack.extend(v for v in values if isinstance(v, Widget))

    def adopt_all(self, widgets) -> None:
        """Adopt each of ``widgets``."""
        for widget in widgets:
            self.adopt(widget)

    def _adopt_comm(self, widget) -> None:
        comm = getattr(widget, "comm", None)
        if comm is None or getattr(comm.handle_msg, "owner", None) is self:
            return
        comm.handle_msg = self.wrap(comm.handle_msg)

    def wrap(self, handle: Callable[[dict], object]) -> Callable[[dict], None]:
        """``handle(msg)`` on the owning thread: at once there, else queued on its loop."""
        def on_owner(msg) -> None:
            loop = self.loop
            if loop is None or loop.is_closed() or self._on_owner_thread():
                handle(msg)
                return
            loop.call_soon_threadsafe(self._handle_logged, handle, msg)

        on_owner.owner = self
        return on_owner

    def _on_owner_thread(self) -> bool:
        # The loop decides, not the thread that adopted: a subshell console may be the
        # first to show the widget, and its thread runs a loop of its own.
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:  # a thread with no loop (not a kernel's): compare threads
            return threading.get_ident() == self.thread_id

    @staticmethod
    def _handle_logged(handle, msg) -> None:
        # What ipykernel's CommManager.comm_msg does around handle_msg on its own thread.
        try:
            handle(msg)
        except Exception:  # noqa: BLE001 - a failing message must not stop the loop
            _log.error("Exception in comm_msg for %s", msg.get("content", {}).get("comm_id"),
                       exc_info=True)
