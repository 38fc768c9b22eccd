"""One training run of the Explorer, in a background thread, seen from the kernel.

:class:`TrainingSession` owns the estimator and its trainer.  Its background
thread builds the trainer (which may first time the device for a time budget)
and runs it.  The trainer's callback only stores the newest snapshot, records
the map in the replay buffer and calls ``on_update`` (the scheduler's
thread-safe ``submit``); it never touches a widget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["TrainingSession", "DEFAULT_WIDGET_BUDGET", "WIDGET_MAP_TIME_FRACTION"]

#: Time budget (seconds) preset in the widget when neither total_epochs nor time_budget is given.
DEFAULT_WIDGET_BUDGET = 600.0
#: The trainer's ``map_time_fraction`` in the widget.  A map (one forward pass over all
#: images) costs about a tenth of an epoch, and the kernel's redraws compete for the
#: same cores: at 0.03 maps cost ~3 % of the training throughput and still come every
#: few seconds (benchmarks/README.md, "Widget throughput").
WIDGET_MAP_TIME_FRACTION = 0.03
_ACTIVE = ("starting", "running", "paused", "stopping")


def _epochs_of(params: dict) -> tuple[int, ...]:
    from tsimcne_widgets.engine.schedule import DEFAULT_EPOCHS, epoch_tuple

    return epoch_tuple(params.get("total_epochs", DEFAULT_EPOCHS), "total_epochs")


class TrainingSession:
    """Background training for the Explorer.

    Parameters
    ----------
    image_set : ImageSet
        The images to train on.
    params : dict
        Keyword arguments of :class:`~tsimcne_widgets.engine.estimator.TSimCNE`.
    replay : ReplayBuffer
        Every snapshot's map is appended here (from the training thread; the
        buffer is thread-safe).

    Attributes
    ----------
    on_update : callable or None
        Called with no meaningful argument, from any thread, whenever there
        is something new to show (a snapshot, or the end of the run).
    estimator : TSimCNE or None
    trainer : Trainer or None
    error : BaseException or None
        Why the last run failed.
    """

    def __init__(self, image_set, params: dict, replay) -> None:
        self.image_set = image_set
        self.params = dict(params)
        self._check_param_names()
        self.replay = replay
        self.on_update: Callable[[Any], object] | None = None
        self.estimator = None
        self.trainer = None
        self.error: BaseException | None = None
        self.checkpoint: str | None = None  # a restored run continues from here
        self.restored_state: str | None = None
        self._lock = threading.Lock()
        self._pending = None
        self._latest = None
        self._generation = 0
        self._phase = "idle"  # our own view: idle, starting, running (trainer), done
        self._stop_early = threading.Event()
        self._thread: threading.Thread | None = None
        self._announced = 0
        self._check_announced = 0

    def _check_param_names(self) -> None:
        import inspect

        from tsimcne_widgets.engine.estimator import TSimCNE

        known = set(inspect.signature(TSimCNE.__init__).parameters) - {"self"}
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise TypeError(f"unknown TSimCNE parameter(s) {unknown}; accepted: {sorted(known)}")

    # ------------------------------------------------------------------ budget
    def default_total_epochs(self) -> int:
        """Total epochs shown in the epoch-budget box."""
        return sum(_epochs_of(self.params))

    def default_time_budget(self) -> float | None:
        """Seconds preset in the time-budget box (None: the epoch budget is preset)."""
        if self.params.get("time_budget") is not None:
            return float(self.params["time_budget"])
        if "total_epochs" in self.params:
            return None
        return DEFAULT_WIDGET_BUDGET

    def _params_for(self, budget: tuple[str, float] | None) -> dict:
        from tsimcne_widgets.engine.schedule import scale_epochs

        params = dict(self.params)
        if budget is None:
            return params
        kind, amount = budget
        if kind == "time":
            params["time_budget"] = float(amount)
        else:
            params["time_budget"] = None
            ratio = _epochs_of(params)
            if int(amount) != sum(ratio):
                params["total_epochs"] = scale_epochs(ratio, int(amount))
        return params

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """``"idle"``, ``"starting"`` (building the network, timing the device), or the
        trainer's state."""
        with self._lock:
            phase, trainer = self._phase, self.trainer
        if phase == "starting":
            return "stopping" if self._stop_early.is_set() else "starting"
        if trainer is not None:
            state = trainer.state
            if state == "idle" and phase == "running":
                # Handed over but not started yet: still starting (Start refused, Stop counts).
                return "stopping" if self._stop_early.is_set() else "starting"
            return state
        if self.error is not None:
            return "failed"
        return self.restored_state or phase

    @property
    def active(self) -> bool:
        """bool : Whether a run is in progress (including paused)."""
        return self.state in _ACTIVE

    @property
    def latest_snapshot(self):
        """The newest snapshot of the current run, or None."""
        with self._lock:
            return self._latest

    @property
    def device_name(self) -> str:
        """str : Where training runs (e.g. ``cpu``, ``cuda``)."""
        from tsimcne_widgets.engine.device import resolve_device

        return str(resolve_device(self.params.get("device", "auto")))

    @property
    def can_continue(self) -> bool:
        """bool : Whether a restored checkpoint can be trained further."""
        return self.checkpoint is not None and not self.active

    # ------------------------------------------------------------------ control
    def start(self, budget: tuple[str, float] | None = None) -> None:
        """Begin a new run in a background thread."""
        from tsimcne_widgets.engine.estimator import TSimCNE

        params = self._params_for(budget)
        estimator = TSimCNE(**params)
        self._launch(lambda callbacks: estimator.prepare(self.image_set, callbacks=callbacks),
                     estimator)

    def resume(self, checkpoint: str | None = None) -> None:
        """Continue a run from a training checkpoint, in a background thread.

        Parameters
        ----------
        checkpoint : str, optional
            Default :attr:`checkpoint` (the one :meth:`Explorer.load` restored).

        Raises
        ------
        ValueError
            When there is no checkpoint to continue from.
        """
        from tsimcne_widgets.engine.estimator import TSimCNE
        from tsimcne_widgets.engine.trainer import Trainer

        checkpoint = self.checkpoint if checkpoint is None else str(checkpoint)
        if checkpoint is None:
            raise ValueError("there is no checkpoint to resume from: load a saved session "
                             "(Explorer.load) or pass checkpoint=<a training checkpoint>")
        estimator = TSimCNE(**self.params)

        def build(callbacks):
            # As TSimCNE.resume, except that without a checkpoint_path of the user's the
            # run writes no checkpoints (as a new run from the widget): the restored one
            # belongs to the saved session folder, which training never changes.
            return Trainer.resume_from(checkpoint, self.image_set, callbacks=callbacks,
                                       device=estimator.device,
                                       checkpoint_path=estimator.checkpoint_path,
                                       compile=estimator.compile,
                                       progress=estimator.verbose,
                                       num_threads=estimator.num_threads)

        self._launch(build, estimator, keep_replay=True)

    def _launch(self, build: Callable, estimator, keep_replay: bool = False) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._pending = None
            self._latest = None
            self._phase = "starting"
            self.trainer = None
        self.error = None
        self.restored_state = None
        self.estimator = estimator
        self._stop_early.clear()
        if not keep_replay:
            self.replay.clear()

        def callback(snapshot) -> bool:
            return self._receive(generation, snapshot)

        from tsimcne_widgets.engine.threads import start_training_thread

        # Building (budget timing) and training both run there, stopped at exit.
        self._thread = start_training_thread(
            lambda: self._run_session(build, estimator, callback, generation),
            self.stop, name="tsimcne-explorer-training",
        )

    def _run_session(self, build, estimator, callback, generation: int) -> None:
        trainer, failure = None, None
        try:
            trainer = build([callback])
            trainer.map_time_fraction = min(trainer.map_time_fraction, WIDGET_MAP_TIME_FRACTION)
            with self._lock:
                if generation != self._generation:
                    return
                self.trainer = trainer
                self._phase = "running"
            estimator.trainer_ = trainer
            estimator.labels_ = self.image_set.labels
            if self._stop_early.is_set():
                trainer.stop()
            else:
                try:
                    trainer.run()
                except RuntimeError:
                    # A Stop between the check above and run() stopped the idle trainer,
                    # so run() refused to start: that is a clean stop, not a failure.
                    if not (self._stop_early.is_set() and trainer.state == "stopped"
                            and trainer.error is None):
                        raise
        except BaseException as error:  # noqa: BLE001 - shown in the widget
            failure = error
        finally:
            if trainer is not None and trainer.error is None and trainer.latest_snapshot:
                try:
                    # The estimator gets the model and the final map, as after fit().
                    estimator.adopt(trainer)
                except Exception as error:  # noqa: BLE001 - the map is already shown
                    failure = failure or error
            with self._lock:
                current = generation == self._generation
                if current:
                    self._phase = "done"
            if current:
                self.error = failure
                self.checkpoint = None
                self._notify()

    def _receive(self, generation: int, snapshot) -> bool:
        """Trainer callback (training thread): keep the newest snapshot, ask for a redraw."""
        with self._lock:
            if generation != self._generation:
                return True  # a newer run replaced this one: stop it
            self._pending = snapshot
            self._latest = snapshot
        self.replay.append(snapshot.embedding, {
            "stage": snapshot.stage, "epoch": snapshot.epoch, "total_epoch": snapshot.total_epoch,
            "loss": snapshot.loss, "provisional": snapshot.provisional,
        })
        self._notify()
        return False

    def _notify(self) -> None:
        if self.on_update is not None:
            self.on_update(None)

    def forget_latest(self) -> None:
        """Drop the newest snapshot (a map set by hand replaces it)."""
        with self._lock:
            self._latest = self._pending = None

    def take_snapshot(self):
        """The snapshot not shown yet (cleared by this call), or None."""
        with self._lock:
            snapshot, self._pending = self._pending, None
            return snapshot

    def pause(self) -> None:
        """Pause the trainer after its current step."""
        if self.trainer is not None:
            self.trainer.pause()

    def unpause(self) -> None:
        """Continue a paused trainer."""
        if self.trainer is not None:
            self.trainer.unpause()

    def stop(self) -> None:
        """Stop the run after its current step (or before it begins)."""
        self._stop_early.set()
        if self.trainer is not None:
            self.trainer.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background thread ends; True if it did."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def announce(self, report: Callable[[str, str], object]) -> None:
        """Report, once per run (``report(text, kind)``), a failed augmentation check
        (the training thread's warning reaches only stderr) and the end of the run."""
        with self._lock:
            generation, phase = self._generation, self._phase
        check = getattr(self.estimator, "augmentation_check_", None)
        if (phase != "starting" and self._check_announced != generation
                and check is not None and not check.passed):
            self._check_announced = generation
            report(check.message, "warning")
        if phase != "done" or self._announced == generation:
            return
        self._announced = generation
        state = self.state
        if self.error is not None or state == "failed":
            error = self.error or (self.trainer.error if self.trainer else None)
            report(f"training failed: {error}", "error")
        elif state == "stopped":
            report("training stopped; the map so far stays (Start trains a new one)", "info")
        else:
            report("training finished", "info")
