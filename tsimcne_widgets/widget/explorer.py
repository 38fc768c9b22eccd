"""The live notebook widget: train a t-SimCNE map and curate the images on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import traitlets

from tsimcne_widgets.data.load import ImageSet, load_images
from tsimcne_widgets.render.replay import ReplayBuffer
from tsimcne_widgets.render.thumbs import ThumbnailCache
from .actions import CurationActions
from .canvas import MapCanvas
from .coloring import LABEL, ColorAndSearch, color_options
from .ownership import MessageOwner
from .scheduler import LatestOnlyScheduler, kernel_event_loop
from .replay_view import ReplayView
from .session import TrainingSession
from .state import NO_COLOR, ExplorerState, IndexArray

__all__ = ["Explorer"]


class Explorer(traitlets.HasTraits, CurationActions, ReplayView, ColorAndSearch):
    """Train a t-SimCNE map of an image collection and curate it, live, in Jupyter.

    Displaying the explorer shows the whole tool: training controls and
    progress, the map (a datashader raster in a Bokeh canvas) with hover cards,
    lasso and box selection, a gallery of the selection, tagging, exports and
    a replay slider.  Everything also works from Python, and selections, tags
    and exports work before and without training.

    What the user sees and chose (map, colouring, selection and its mode, tags,
    messages) lives in :attr:`model`, an
    :class:`~tsimcne_widgets.widget.state.ExplorerState`; the widgets are built
    from it and observe it.  The explorer's own traits :attr:`selection` and
    :attr:`color_column` follow the model both ways, so they can be observed
    and linked like any ipywidget's (``explorer.observe(callback, "selection")``,
    ``ipywidgets.link((explorer, "color_column"), (dropdown, "value"))``).

    Parameters
    ----------
    data
        Anything :func:`~tsimcne_widgets.data.load.load_images` accepts (array,
        tensor, ImageSet, torchvision-style dataset, folder, list of paths,
        DataFrame or CSV with a ``path`` column).
    labels : array_like, optional
        One label per image (overrides labels found in ``data``).
    metadata : pandas.DataFrame or mapping of columns, optional
        N rows of extra per-image columns, shown on hover and exported.
    canvas_width, canvas_height : int
        Size of the map in screen pixels.
    hover_radius : float
        Pointer distance in screen pixels within which a point is hovered.
    thumb_size : int
        Size of the hover card's image in CSS pixels.
    max_replay_bytes : int
        Memory bound of the training replay (maps are stored as float16).
    min_apply_interval : float
        Seconds between two map updates on screen while training.
    **tsimcne_params
        Passed to :class:`~tsimcne_widgets.engine.estimator.TSimCNE` (``total_epochs``,
        ``batch_size``, ``backbone``, ``device``, ``time_budget``, ...).

    Attributes
    ----------
    model : ExplorerState
        The map, colouring, selection, selection mode, tags and messages.
    selection : numpy.ndarray
        Trait: sorted indices of the selected images (read-only int64; assign any
        indices or a boolean mask to select).
    color_column : str
        Trait: what the points are coloured by (the method :meth:`color_by` sets it).
    training : TrainingSession
        The background training run.
    replay : ReplayBuffer
        The maps of the run, for the replay slider.

    Examples
    --------
    >>> from tsimcne_widgets import Explorer
    >>> from tsimcne_widgets.data.datasets import load_digits
    >>> explorer = Explorer(load_digits(), time_budget=120)   # doctest: +SKIP
    >>> explorer                                              # doctest: +SKIP
    >>> explorer.start()                                      # doctest: +SKIP
    >>> explorer.observe(lambda change: print(len(change.new)), "selection")  # doctest: +SKIP
    """

    #: numpy.ndarray : Sorted indices of the selected images (settable; a trait that
    #: follows ``model.selection``: observe it, link it).
    selection = IndexArray()
    #: str : What the points are coloured by (``"label"``, a metadata column or
    #: ``"none"``); a trait that follows ``model.color_column``.  :meth:`color_by` sets it.
    color_column = traitlets.Unicode()
    #: dict : ``{tag name: number of images}``, read-only; a trait that follows the
    #: tags (observe it, or ``ipywidgets.dlink`` it to a widget).  :meth:`tag` changes it.
    tag_counts = traitlets.Dict(read_only=True)

    def __init__(self, data, labels=None, metadata=None, *, canvas_width: int = 640,
                 canvas_height: int = 520, hover_radius: float = 6.0, thumb_size: int = 160,
                 max_replay_bytes: int = 256 * 1024 * 1024, min_apply_interval: float = 0.25,
                 **tsimcne_params) -> None:
        super().__init__()  # no trait values from the arguments: those are ours
        self.image_set: ImageSet = load_images(data, labels)
        self.n = len(self.image_set)
        self.metadata = _merge_metadata(self.image_set.metadata, metadata, self.n)
        self.labels = self.image_set.labels
        self.thumb_size = int(thumb_size)
        self.model = ExplorerState(self.n, color_options(self.labels, self.metadata),
                                   LABEL if self.labels is not None else NO_COLOR)
        self.thumbnails = ThumbnailCache(self.image_set.images, self.image_set.paths)
        self.replay = ReplayBuffer(max_bytes=max_replay_bytes)
        self.training = TrainingSession(self.image_set, tsimcne_params, self.replay)
        self._shown_frame: int | None = None  # replay frame on screen; None = live
        self._moving_slider = False  # set while code (not the user) moves the replay slider
        self.last_polygon: np.ndarray | None = None  # (M, 2) data units of the last lasso/box

        from .controls import ControlPanel, progress_html  # ipywidgets: UI layer only
        from .gallery import Gallery

        self._progress_html = progress_html
        self.canvas = MapCanvas(canvas_width, canvas_height, hover_radius)
        self.controls = ControlPanel(
            self.model.color_options, self.model.color_column,
            self.training.default_time_budget(), self.training.default_total_epochs(),
        )
        self.gallery = Gallery(self.thumbnails, self.labels)
        self._loop = kernel_event_loop()
        self._scheduler = LatestOnlyScheduler(
            self._apply_pending, self._loop, min_apply_interval, on_error=self._report
        )
        self.training.on_update = self._scheduler.submit
        self._wire()
        from .table import SelectionTable  # ipywidgets: UI layer only

        self.table = SelectionTable(self)  # also links gallery clicks with the map's ring
        self._show_colors()
        self._update_training_ui(None)
        self._box = None
        self._bokeh_model = None

    # ------------------------------------------------------------------ display
    @property
    def widget(self):
        """ipywidgets.VBox : The whole tool (built on first use)."""
        if self._box is None:
            import ipywidgets as widgets
            from jupyter_bokeh import BokehModel

            self._bokeh_model = BokehModel(self.canvas.figure, combine_events=True)
            self.canvas.client.on_mode = self._combine_browser_events
            self._combine_browser_events(self.canvas.client.active)
            # CSS hooks for end-to-end tests and user styling.
            self._bokeh_model.add_class("tsw-canvas")
            self.controls.count.add_class("tsw-selection-count")
            side = widgets.VBox([self.controls.curation_column(), self.gallery.widget,
                                 self.table.widget],
                                layout=widgets.Layout(margin="0 0 0 8px"))
            self._box = widgets.VBox([
                self.controls.training_row(),
                widgets.HBox([self._bokeh_model, side]),
                self.controls.replay_row(),
                self.controls.message,
            ])
            # Comm messages may arrive on a kernel subshell's thread (JupyterLab 4.6's
            # default): handle them on this loop's thread, like everything else here.
            MessageOwner(self._loop).adopt(self._box)
        return self._box

    def _combine_browser_events(self, browser_answers: bool) -> None:
        # With combine_events, jupyter_bokeh sends the kernel one message per idle cycle
        # and keeps only the newest of each kind meanwhile: it tames the stream of mouse
        # moves the kernel answers above the browser's limit, but below it (no mouse moves
        # sent) it only delays a zoom's view by 150-230 ms behind echoes and page requests.
        # Views arriving in a burst are drawn once either way (MapCanvas.request_view).
        if self._bokeh_model is not None:
            self._bokeh_model.combine_events = not browser_answers

    def _prepare_display(self):
        from .notebook import publish_bokehjs

        box = self.widget
        # jupyter_bokeh re-renders a view from its initial bundle; refresh it so a
        # second display (or a page reload) shows the current map, not the first one.
        self._bokeh_model.update_from_model(self.canvas.figure)
        publish_bokehjs([self.canvas.figure])
        return box

    def _mime_bundle(self) -> dict:
        # The live widget for frontends with a widget manager; a picture of the map and
        # one line on getting the live view for those without (nbconvert, GitHub).
        from .notebook import STATIC_HINT, map_png, static_fallback

        bundle = self._prepare_display()._repr_mimebundle_()
        return static_fallback(bundle, map_png(self.embedding, self.labels, n_images=self.n),
                               STATIC_HINT)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._mime_bundle(), raw=True)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self._mime_bundle()

    def __repr__(self) -> str:
        return (f"Explorer(n={self.n}, state={self.state!r}, selected={len(self.selection)}, "
                f"tags={list(self.tag_store.names)})")

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        c, model = self.controls, self.model
        self.canvas.on_polygon = self._on_polygon
        self.canvas.on_hover = lambda x, y, sx, sy: self._on_hover(x, y, sx, sy)
        self.canvas.on_leave = self._on_leave
        self.canvas.on_error = self._report
        self.canvas.on_selection = self._on_client_selection  # browser-side lasso, click, keys
        self.canvas.set_point_info(self.image_set.images, self.labels, self.metadata,
                                   self.thumb_size)
        for button, action in ((c.start, self.start), (c.pause, self.pause),
                               (c.unpause_resume, self._unpause_or_resume), (c.stop, self.stop),
                               (c.undo, self._undo), (c.clear, self._clear_selection),
                               (c.tag_button, self._tag_clicked),
                               (c.csv_button, self._csv_clicked),
                               (c.files_button, self._files_clicked)):
            button.on_click(self._ui(action))
        c.on_search(self._ui(lambda: self.search(c.search_text.value, c.search_regex.value)))
        c.replay.observe(self._ui(self._replay_moved, takes_event=True), names="value")
        c.live.observe(self._ui(self._live_toggled, takes_event=True), names="value")
        # The view follows the model.  These observers come before the explorer's own
        # traits follow it: a failing user observer of those must not keep the map,
        # the count or the gallery from showing the change.
        model.observe(self._show_selection, "selection")
        model.observe(self._show_map, "map")
        model.observe(self._show_provisional, "provisional")
        model.observe(self._ui(self._show_colors, takes_event=True), "color_column")
        model.observe(self._show_tags, "tags_version")
        model.observe(lambda change: c.show_messages(change["new"]), "messages")
        traitlets.link((model, "color_column"), (c.color, "value"))
        traitlets.link((model, "selection_mode"), (c.mode, "value"))
        model.observe(self._follow_model, ["selection", "color_column"])
        self.selection = model.selection
        self.color_column = model.color_column
        model.observe(self._follow_tags, "tags_version")
        self._follow_tags()

    def _follow_tags(self, change=None) -> None:
        store = self.model.tag_store
        self.set_trait("tag_counts", {name: int(store.indices(name).size) for name in store.names})

    def _follow_model(self, change) -> None:
        setattr(self, change["name"], change["new"])

    def _on_client_selection(self, indices, polygon, action: str) -> None:
        # The browser chose this selection itself (maps up to canvas.client.max_points);
        # the kernel takes it as the user sees it.
        if polygon is not None:
            self.last_polygon = np.asarray(polygon, dtype=np.float64)
        if action == "undo":
            self.model.undo()
            # Changes the browser made while the kernel was busy reach it as one message,
            # the newest: the kernel's undo history then lacks the others.  The browser's
            # state is what the user sees, so the kernel ends there.
            if not np.array_equal(np.sort(self.model.selection), np.unique(indices)):
                self.select(indices)
        else:
            self.select(indices)

    # Setting one of the explorer's traits sets the model's (which checks the value and,
    # for the selection, records the undo history); the model's change then comes back
    # through _follow_model as an assignment of an equal value, which notifies no one.
    @traitlets.validate("selection")
    def _selection_to_model(self, proposal):
        self.model.selection = proposal["value"]
        return self.model.selection

    @traitlets.validate("color_column")
    def _color_column_to_model(self, proposal):
        self.model.color_column = proposal["value"]
        return self.model.color_column

    def _ui(self, action: Callable, *, takes_event: bool = False) -> Callable:
        """Wrap a UI handler: errors go to the message area instead of killing the widget."""
        def handler(event=None):
            try:
                action(event) if takes_event else action()
            except Exception as error:  # noqa: BLE001 - shown to the user
                self._report(error)

        return handler

    def _report(self, error: BaseException | str, kind: str = "error") -> None:
        text = error if isinstance(error, str) else _describe_error(error)
        self.model.report(text, kind)

    @property
    def messages(self) -> list[tuple[str, str]]:
        """list of (kind, text) : The latest messages, oldest first (the widget shows the
        last few; ``model.messages`` has their times)."""
        return [(message.kind, message.text) for message in self.model.messages]

    # ------------------------------------------------------------------ training
    @property
    def state(self) -> str:
        """str : ``"idle"`` before training, else the trainer's state."""
        return self.training.state

    def start(self) -> "Explorer":
        """Train a new map in the background (the cell returns at once)."""
        if self.training.active:
            self._report("training is already running; press Stop before starting again",
                         "warning")
            return self
        kind, amount = self.controls.budget
        self._scheduler.discard()
        self._shown_frame = None
        self.controls.live.value = True
        self.training.start(budget=(kind, amount))
        self._report(f"training started on {self.training.device_name}", "info")
        self._update_training_ui(None)
        return self

    def pause(self) -> "Explorer":
        """Pause training after the current step."""
        return self._only_when("running", "pause", self.training.pause)

    def unpause(self) -> "Explorer":
        """Continue a paused run (see :meth:`pause`)."""
        return self._only_when("paused", "unpause", self.training.unpause)

    def _only_when(self, state: str, verb: str, action: Callable[[], None]) -> "Explorer":
        if self.state != state:
            self._report(f"nothing to {verb}: training is {self.state}", "warning")
        else:
            action()
        self._update_training_ui(None)
        return self

    def resume(self) -> "Explorer":
        """Continue training a session restored by :meth:`load` from its checkpoint.

        A paused run goes on with :meth:`unpause` instead.
        """
        if self.state == "paused":
            self._report("training is paused: unpause() (the Unpause button) continues it; "
                         "resume() continues a saved session from its checkpoint", "warning")
        elif self.training.can_continue:
            self._scheduler.discard()
            self.training.resume()
            self._report("training continues from the saved checkpoint", "info")
        else:
            self._report(f"nothing to resume: training is {self.state} and there is no "
                         "checkpoint to continue from (Explorer.load restores one)", "warning")
        self._update_training_ui(None)
        return self

    def _unpause_or_resume(self) -> None:
        if self.state == "paused":
            self.unpause()
        else:
            self.resume()

    def stop(self) -> "Explorer":
        """Stop training after the current step; the map so far stays."""
        if not self.training.active:
            self._report(f"nothing to stop: training is {self.state}", "warning")
            return self
        self.training.stop()
        self._update_training_ui(None)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until training ends (or ``timeout`` s), then show the final map.

        Returns
        -------
        bool
            True if training is not running any more.
        """
        done = self.training.wait(timeout)
        self._scheduler.flush()
        return done

    def _apply_pending(self, _nudge=None) -> None:
        """Show the newest snapshot (runs on the kernel's event loop thread)."""
        snapshot = self.training.take_snapshot()
        if snapshot is not None:
            self.model.set_map(snapshot.embedding, bool(snapshot.provisional))
            self._sync_replay_slider()
        self._update_training_ui(snapshot)
        self.training.announce(self._report)

    def refresh(self) -> "Explorer":
        """Bring the widgets up to date with the replay and the training run (the model's
        changes show by themselves), e.g. after restoring a session's replay."""
        self._sync_replay_slider()
        self._update_training_ui(None)
        return self

    def _update_training_ui(self, snapshot) -> None:
        state = self.state
        self.controls.set_state(state, can_resume=self.training.can_continue)
        latest = snapshot or self.training.latest_snapshot
        self.controls.progress.value = self._progress_html(latest, state)
        if latest is not None and latest.total_epochs:
            self.controls.progress_bar.value = latest.total_epoch / latest.total_epochs

    # ------------------------------------------------------------------ the map
    @property
    def embedding(self) -> np.ndarray | None:
        """numpy.ndarray or None : The newest map (N×2), None before any training."""
        snapshot = self.training.latest_snapshot
        if snapshot is not None:
            return np.asarray(snapshot.embedding, dtype=np.float32)
        return self.model.map

    def set_embedding(self, xy, provisional: bool = False) -> "Explorer":
        """Show a map computed elsewhere (e.g. by ``TSimCNE().fit_transform``) without training.

        Parameters
        ----------
        xy : array_like, shape (N, 2)
            One row per image; NaN rows are not drawn.
        provisional : bool
            Label the view as a provisional PCA view.
        """
        if self.training.active:
            raise RuntimeError("training is running; stop it before replacing the map")
        xy = self.model.check_map(xy)  # a bad map changes nothing
        self.training.forget_latest()
        self._go_live()
        self.model.set_map(xy, provisional)  # shown by _show_map
        self._replay_label()
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path, overwrite: bool = False) -> Path:
        """Save the session to folder ``path``: the images (or their source paths), map,
        replay, tags, selection and training checkpoint; see :meth:`load`."""
        from .persistence import save_explorer

        return save_explorer(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, **kwargs) -> "Explorer":
        """Restore an explorer written by :meth:`save`; :meth:`resume` continues training."""
        from .persistence import load_explorer

        return load_explorer(cls, path, **kwargs)

    @classmethod
    def watch(cls, folder, data, labels=None, *, interval: float = 0.5, **kwargs) -> "Explorer":
        """An explorer that shows a run elsewhere, from the folder its ``--snapshots`` writes.

        Parameters
        ----------
        folder : str or path-like
            The run's snapshot folder (``train ... --snapshots folder``), shared with
            the machine that trains.
        data, labels, **kwargs
            As for :class:`Explorer`: the same images, in the same order, as the run.
        interval : float
            Seconds between two looks at the folder.
        """
        from .watch import WatchedSession

        explorer = cls(data, labels, **kwargs)
        session = WatchedSession(folder, explorer.image_set, explorer.replay, interval)
        session.on_update = explorer._scheduler.submit
        explorer.training = session.begin()
        explorer.controls.watching()
        explorer._update_training_ui(None)
        return explorer


def _merge_metadata(from_data, extra, n: int) -> pd.DataFrame | None:
    frames = [f for f in (from_data,) if f is not None]
    if extra is not None:
        extra = extra if isinstance(extra, pd.DataFrame) else pd.DataFrame(extra)
        if len(extra) != n:
            raise ValueError(f"metadata has {len(extra)} rows but there are {n} images; "
                             "pass one row per image, in image order")
        frames.append(extra.reset_index(drop=True))
    if not frames:
        return None
    merged = pd.concat(frames, axis=1)
    return merged.loc[:, ~merged.columns.duplicated(keep="last")]


def _describe_error(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    message = str(error) or type(error).__name__
    if isinstance(error, KeyError) and len(error.args) == 1:
        message = str(error.args[0])
    return message
