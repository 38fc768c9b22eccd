"""Background training threads: started after releasing the caller's OpenMP team, and
stopped before the interpreter exits.

Every training thread (``Trainer.start``, the widget's Start) begins with
:func:`start_training_thread`, so both concerns live in one place.

Training threads are daemon threads, so that a forgotten run never keeps Python alive.
But at exit Python ends a daemon thread wherever it is, and when that is inside torch's
C++ code the forced unwinding aborts the whole process: "terminate called without an
active exception" (or "FATAL: exception not rethrown"), exit status 134, about every
time an interpreter exited while a map was training.  The :mod:`atexit` hook here asks
every registered run to stop and waits, up to :data:`EXIT_TIMEOUT` seconds in all, for
its thread to finish the step it is in.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["start_training_thread", "running", "stop_all", "EXIT_TIMEOUT"]

#: Seconds the exit hook waits, in all, for the training threads to stop.
EXIT_TIMEOUT = 30.0

_lock = threading.Lock()
_runs: dict[int, tuple[threading.Thread, Callable[[], object]]] = {}
_tokens = itertools.count()


@contextlib.contextmanager
def running(stop: Callable[[], object]) -> Iterator[None]:
    """Register the calling thread's run while the block executes.

    Parameters
    ----------
    stop : callable
        Asks the run to end soon (e.g. ``Trainer.stop``); called at interpreter exit.
    """
    token = next(_tokens)
    with _lock:
        _runs[token] = (threading.current_thread(), stop)
    try:
        yield
    finally:
        with _lock:
            _runs.pop(token, None)


def start_training_thread(
    target: Callable[[], object], stop: Callable[[], object], name: str
) -> threading.Thread:
    """Run ``target`` in a new daemon thread, registered to be stopped at exit.

    Parameters
    ----------
    target : callable
        The training work (building the trainer, training, reporting).
    stop : callable
        Asks that work to end soon; called at interpreter exit.
    name : str
        The thread's name.
    """
    from .device import release_idle_openmp_threads

    # The calling thread's idle OpenMP team (from torch work there, e.g. the kernel's
    # main thread) would make the new thread's OpenMP workers sleep between kernels.
    release_idle_openmp_threads()

    def run() -> None:
        with running(stop):
            target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def stop_all(timeout: float = EXIT_TIMEOUT) -> bool:
    """Stop every registered run and wait for its thread; True if all ended in time."""
    with _lock:
        runs = list(_runs.values())
    me = threading.current_thread()
    for _, stop in runs:
        try:
            stop()
        except Exception:  # noqa: BLE001 - at exit, stopping the others matters more
            pass
    deadline = time.monotonic() + timeout
    for thread, _ in runs:
        if thread is not me:
            thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread, _ in runs if thread is not me)


atexit.register(stop_all)
