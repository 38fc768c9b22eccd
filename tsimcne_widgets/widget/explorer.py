"""The live notebook widget: train a t-SimCNE map and curate the images on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tsimcne_widgets.curation.selection import SelectionModel, TagStore
from tsimcne_widgets.data.load import ImageSet, load_images
from tsimcne_widgets.render.replay import ReplayBuffer
from tsimcne_widgets.render.thumbs import ThumbnailCache
from .canvas import PROVISIONAL_TEXT, MapCanvas, categorize
from .actions import CurationMixin
from .scheduler import LatestOnlyScheduler, kernel_event_loop
from .session import TrainingSession

__all__ = ["Explorer"]

_NONE = "none"
_LABEL = "label"


class Explorer(CurationMixin):
    """Train a t-SimCNE map of an image collection and curate it, live, in Jupyter.

    Displaying the explorer shows the whole tool: training controls and
    progress, the map (a datashader raster in a Bokeh canvas) with hover cards,
    lasso and box selection, a gallery of the selection, tagging, exports and
    a replay slider.  Everything also works from Python, and selections, tags
    and exports work before and without training.

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

    Examples
    --------
    >>> from tsimcne_widgets import Explorer
    >>> from tsimcne_widgets.data.datasets import load_digits
    >>> explorer = Explorer(load_digits(), time_budget=120)   # doctest: +SKIP
    >>> explorer                                              # doctest: +SKIP
    >>> explorer.start()                                      # doctest: +SKIP
    """

    def __init__(self, data, labels=None, metadata=None, *, canvas_width: int = 640,
                 canvas_height: int = 520, hover_radius: float = 6.0, thumb_size: int = 160,
                 max_replay_bytes: int = 256 * 1024 * 1024, min_apply_interval: float = 0.25,
                 **tsimcne_params) -> None:
        self.image_set: ImageSet = load_images(data, labels)
        self.n = len(self.image_set)
        self.metadata = _merge_metadata(self.image_set.metadata, metadata, self.n)
        self.labels = self.image_set.labels
        self.thumb_size = int(thumb_size)
        self.selection_model = SelectionModel(self.n)
        self.tag_store = TagStore(self.n)
        self.thumbnails = ThumbnailCache(self.image_set.images, self.image_set.paths)
        self.replay = ReplayBuffer(max_bytes=max_replay_bytes)
        self.training = TrainingSession(self.image_set, tsimcne_params, self.replay)
        self._map: np.ndarray | None = None  # newest map that reached the widget
        self._provisional = False
        self._shown_frame: int | None = None  # replay frame on screen; None = live
        self._moving_slider = False  # set while code (not the user) moves the replay slider
        self.last_polygon: np.ndarray | None = None  # (M, 2) data units of the last lasso/box
        self._color_column = _LABEL if self.labels is not None else _NONE

        from .controls import ControlPanel, progress_html  # ipywidgets: UI layer only
        from .gallery import Gallery

        self._progress_html = progress_html
        self.canvas = MapCanvas(canvas_width, canvas_height, hover_radius)
        self.controls = ControlPanel(
            self._color_options(), self._color_column,
            self.training.default_time_budget(), self.training.default_total_epochs(),
        )
        self.gallery = Gallery(self.thumbnails, self.labels)
        self._loop = kernel_event_loop()
        self._scheduler = LatestOnlyScheduler(
            self._apply_pending, self._loop, min_apply_interval, on_error=self._report
        )
        self.training.on_update = self._scheduler.submit
        self._wire()
        self.canvas.set_colors(*self._categories())
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
            # CSS hooks for end-to-end tests and user styling.
            self._bokeh_model.add_class("tsw-canvas")
            self.controls.count.add_class("tsw-selection-count")
            side = widgets.VBox([self.controls.curation_column(), self.gallery.widget],
                                layout=widgets.Layout(margin="0 0 0 8px"))
            self._box = widgets.VBox([
                self.controls.training_row(),
                widgets.HBox([self._bokeh_model, side]),
                self.controls.replay_row(),
                self.controls.message,
            ])
        return self._box

    def _prepare_display(self):
        from .notebook import publish_bokehjs

        box = self.widget
        # jupyter_bokeh re-renders a view from its initial bundle; refresh it so a
        # second display (or a page reload) shows the current map, not the first one.
        self._bokeh_model.update_from_model(self.canvas.figure)
        publish_bokehjs([self.canvas.figure])
        return box

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._prepare_display())

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self._prepare_display()._repr_mimebundle_(include=include, exclude=exclude)

    def __repr__(self) -> str:
        return (f"Explorer(n={self.n}, state={self.state!r}, selected={len(self.selection)}, "
                f"tags={list(self.tag_store.names)})")

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        c = self.controls
        self.canvas.on_polygon = self._on_polygon
        self.canvas.on_hover = lambda x, y, sx, sy: self._on_hover(x, y, sx, sy)
        self.canvas.on_leave = self._on_leave
        self.canvas.on_error = self._report
        for button, action in ((c.start, self.start), (c.pause, self.pause),
                               (c.resume, self.resume), (c.stop, self.stop),
                               (c.undo, self._undo), (c.clear, self._clear_selection),
                               (c.tag_button, self._tag_clicked),
                               (c.csv_button, self._csv_clicked),
                               (c.files_button, self._files_clicked)):
            button.on_click(self._ui(action))
        c.color.observe(self._ui(lambda change: self.color_by(change["new"]), takes_event=True),
                        names="value")
        c.replay.observe(self._ui(self._replay_moved, takes_event=True), names="value")
        c.live.observe(self._ui(self._live_toggled, takes_event=True), names="value")
        self.selection_model.observe(self._selection_changed)
        self.tag_store.observe(lambda store: self._show_tags())

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
        self.controls.show_message(text, kind)

    @property
    def messages(self) -> list[tuple[str, str]]:
        """list of (kind, text) : The latest messages shown in the widget."""
        return self.controls.messages

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
        if self.state != "running":
            self._report(f"nothing to pause: training is {self.state}", "warning")
        else:
            self.training.pause()
        self._update_training_ui(None)
        return self

    def resume(self) -> "Explorer":
        """Continue a paused run, or a run restored by :meth:`load`."""
        if self.state == "paused":
            self.training.resume()
        elif self.training.can_continue:
            self._scheduler.discard()
            self.training.continue_run()
            self._report("training continues from the saved checkpoint", "info")
        else:
            self._report(f"nothing to resume: training is {self.state}", "warning")
        self._update_training_ui(None)
        return self

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
            self._map = np.asarray(snapshot.embedding, dtype=np.float32)
            self._provisional = bool(snapshot.provisional)
            if self._shown_frame is None:
                self._display_map(self._map, self._provisional)
            self._sync_replay_slider()
        self._update_training_ui(snapshot)
        self.training.announce(self._report)

    def _update_training_ui(self, snapshot) -> None:
        state = self.state
        self.controls.set_state(state)
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
        return self._map

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
        xy = np.array(xy, dtype=np.float32)
        if xy.shape != (self.n, 2):
            raise ValueError(f"the map must have shape ({self.n}, 2), got {xy.shape}")
        self.training.forget_latest()
        self._map, self._provisional = xy, bool(provisional)
        self.show_live()
        return self

    def _display_map(self, xy, provisional: bool) -> None:
        self.canvas.set_map(xy)
        self.canvas.set_status(PROVISIONAL_TEXT if provisional else None)
        self.canvas.hide_card()

    def _shown_map(self) -> np.ndarray | None:
        return self.canvas.xy

    def _sync_replay_slider(self) -> None:
        frames = len(self.replay)
        slider = self.controls.replay
        self._moving_slider = True
        try:
            slider.max = max(frames - 1, 0)
            slider.disabled = frames < 2
            if self._shown_frame is None:
                slider.value = slider.max
        finally:
            self._moving_slider = False
        self._replay_label()

    def _replay_label(self) -> None:
        frames = len(self.replay)
        if frames == 0:
            self.controls.replay_info.value = ""
            return
        k = self.controls.replay.value
        info = self.replay.infos[min(k, frames - 1)]
        where = "live" if self._shown_frame is None else f"frame {k + 1}/{frames}"
        self.controls.replay_info.value = (
            f'<span style="font:12px sans-serif">{where} · stage {info.get("stage", "?")} '
            f'epoch {info.get("total_epoch", "?")}</span>'
        )

    def _replay_moved(self, change) -> None:
        if self._moving_slider:
            return
        self.show_frame(change["new"])

    def _live_toggled(self, change) -> None:
        if change["new"]:
            self.show_live()
        elif self._shown_frame is None and len(self.replay):
            self.show_frame(len(self.replay) - 1)

    def show_frame(self, k: int) -> "Explorer":
        """Show replay frame ``k`` (0 = first map of the run) instead of the live map."""
        frames = len(self.replay)
        if frames == 0:
            raise ValueError("there is nothing to replay yet: start training first")
        if not -frames <= int(k) < frames:
            raise IndexError(f"replay frame {k} out of range: there are {frames} frames")
        k = int(k) % frames
        xy, info = self.replay[k]
        self._shown_frame = k
        self._moving_slider = True
        try:
            self.controls.replay.value = k
            self.controls.live.value = False
        finally:
            self._moving_slider = False
        self._display_map(xy, bool(info.get("provisional", False)))
        self._replay_label()
        return self

    def show_live(self) -> "Explorer":
        """Follow the newest map again."""
        self._shown_frame = None
        self._moving_slider = True
        try:
            self.controls.live.value = True
            self.controls.replay.value = self.controls.replay.max
        finally:
            self._moving_slider = False
        if self._map is not None:
            self._display_map(self._map, self._provisional)
        self._replay_label()
        return self

    # ------------------------------------------------------------------ colours
    def _color_options(self) -> list[str]:
        options = [_LABEL] if self.labels is not None else []
        if self.metadata is not None:
            options += [str(c) for c in self.metadata.columns if str(c) not in (_LABEL, _NONE)]
        return options + [_NONE]

    def _categories(self):
        if self._color_column == _NONE:
            return None, None
        if self._color_column == _LABEL:
            values = self.labels
        else:
            values = self.metadata[self._column_key(self._color_column)].to_numpy()
        return categorize(values)

    def _column_key(self, name: str):
        for column in self.metadata.columns:
            if str(column) == name:
                return column
        raise KeyError(name)

    def color_by(self, column: str | None) -> "Explorer":
        """Colour points by ``"label"``, a metadata column, or nothing (None / ``"none"``)."""
        column = _NONE if column is None else str(column)
        options = self._color_options()
        if column not in options:
            raise ValueError(f"cannot colour by {column!r}; choose one of {options}")
        self._color_column = column
        if self.controls.color.value != column:
            self.controls.color.value = column
        self.canvas.set_colors(*self._categories())
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
