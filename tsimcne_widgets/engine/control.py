"""The life of a run that runs once, controlled from any thread.

``idle`` -> ``running`` <-> ``paused`` -> ``stopping`` -> ``finished``, ``stopped`` or
``failed``.  :class:`RunControl` keeps that state machine, the pause gate and the
clock (pauses excluded); a subclass supplies the work (:meth:`RunControl._work`) and
checks :attr:`RunControl.stop_requested` and :meth:`RunControl.wait_while_paused`
between its steps.
"""

from __future__ import annotations

import threading
import time

from .threads import start_training_thread

__all__ = ["RunControl"]


class RunControl:
    """Thread-safe state of one run: start or run it once, pause, unpause, stop, wait.

    Attributes
    ----------
    error : BaseException or None
        Why the run failed.
    """

    #: Name of the thread :meth:`start` runs the work in.
    thread_name = "tsimcne-run"

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._state = "idle"
        self._state_lock = threading.Lock()
        self._run_gate = threading.Event()
        self._run_gate.set()
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._elapsed_before = 0.0
        self._run_started = 0.0
        self._paused_seconds = 0.0
        self._interrupted = False

    # ------------------------------------------------------------------ the work
    def _work(self) -> None:
        """The run itself (blocking); subclasses implement it."""
        raise NotImplementedError

    def _explain(self, exc: BaseException) -> BaseException:
        """The error to report for ``exc``, which ended the work (default: itself)."""
        return exc

    def _on_end(self) -> None:
        """Called once the work ended without failing, in the final state."""

    # ------------------------------------------------------------------ control
    @property
    def state(self) -> str:
        """``"idle"``, ``"running"``, ``"paused"``, ``"stopping"``, ``"finished"``,
        ``"stopped"`` or ``"failed"``."""
        with self._state_lock:
            return self._state

    def _set_state(self, state: str, only_from: tuple[str, ...] | None = None) -> bool:
        with self._state_lock:
            if only_from is not None and self._state not in only_from:
                return False
            self._state = state
            return True

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._set_state("failed")

    def start(self):
        """Run the work in a daemon thread and return at once (``self``)."""
        self._claim_run()
        self._thread = start_training_thread(self._execute, self.stop, name=self.thread_name)
        return self

    def run(self) -> str:
        """Run the work to the end (blocking) and return the final state.

        Raises
        ------
        BaseException
            The error of a failed run (also kept in :attr:`error`).
        KeyboardInterrupt
            After an interrupt, once the run is cleanly ``"stopped"``.
        """
        self._claim_run()
        self._execute()
        if self.error is not None:
            raise self.error
        if self._interrupted:
            raise KeyboardInterrupt
        return self.state

    def _claim_run(self) -> None:
        if not self._set_state("running", only_from=("idle",)):
            name = type(self).__name__
            raise RuntimeError(
                f"this {name} is {self.state}; a {name} runs once: create a new one or "
                f"continue from a checkpoint with {name}.resume_from"
            )

    def pause(self) -> None:
        """Pause after the current step (no effect unless running)."""
        if self._set_state("paused", only_from=("running",)):
            self._run_gate.clear()

    def unpause(self) -> None:
        """Continue a paused run (no effect unless paused)."""
        if self._set_state("running", only_from=("paused",)):
            self._run_gate.set()

    def stop(self) -> None:
        """Stop after the current step; the state becomes ``"stopped"``."""
        self._stop_requested.set()
        self._set_state("stopping", only_from=("running", "paused"))
        if self._set_state("stopped", only_from=("idle",)):
            self._done.set()
        self._run_gate.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends or ``timeout`` seconds pass; True if it ended."""
        return self._done.wait(timeout)

    @property
    def stop_requested(self) -> bool:
        """bool : Whether :meth:`stop` was called; the work ends at its next check."""
        return self._stop_requested.is_set()

    def wait_while_paused(self) -> None:
        """Block the working thread while the run is paused (pauses are not timed)."""
        if not self._run_gate.is_set():
            paused_at = time.perf_counter()
            self._run_gate.wait()
            self._paused_seconds += time.perf_counter() - paused_at

    @property
    def paused_seconds(self) -> float:
        """float : Seconds this run has spent paused so far."""
        return self._paused_seconds

    def _restore_elapsed(self, seconds: float) -> None:
        # Earlier runs of the same work (a resumed checkpoint) count in elapsed.
        self._elapsed_before = float(seconds)

    @property
    def elapsed(self) -> float:
        """Seconds of work so far, pauses excluded, earlier runs included."""
        if self._run_started and not self._done.is_set():
            live = time.perf_counter() - self._run_started - self._paused_seconds
            return self._elapsed_before + live
        return self._elapsed_before

    def _execute(self) -> None:
        self._run_started = time.perf_counter()
        self._paused_seconds = 0.0
        try:
            self._work()
            if self.state == "failed":
                return
            self._set_state("stopped" if self.stop_requested else "finished")
            self._on_end()
        except KeyboardInterrupt:
            # Ctrl-C in a blocking run means "stop": the work so far stays usable, and
            # run() re-raises the interrupt once the state is clean.
            self._interrupted = True
            self._set_state("stopped")
        except BaseException as exc:  # noqa: BLE001 - reported through state and error
            self._fail(self._explain(exc))
        finally:
            run_seconds = time.perf_counter() - self._run_started - self._paused_seconds
            total = self._elapsed_before + run_seconds
            self._run_started = 0.0  # first, so a concurrent reader never counts this run twice
            self._elapsed_before = total
            self._done.set()
