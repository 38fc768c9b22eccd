"""ipywidgets controls of the Explorer: training buttons, progress, curation, messages.

Only layout and small pure helpers live here; the behaviour is wired up by
:class:`~tsimcne_widgets.widget.explorer.Explorer`, and what the controls show
of the curation (colouring, selection mode, messages) comes from its
:class:`~tsimcne_widgets.widget.state.ExplorerState`.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from tsimcne_widgets.curation.selection import SELECTION_MODES

__all__ = ["ControlPanel", "sparkline_svg", "format_duration", "progress_html"]

_BUTTON = widgets.Layout(width="88px")
_BUDGET_TIME = "minutes"
_BUDGET_EPOCHS = "epochs"
#: Messages shown at once in the message area (the newest last).
SHOWN_MESSAGES = 4
_MESSAGE_COLORS = {"error": "#b00020", "warning": "#8a6d00", "info": "#1b5e20"}


def sparkline_svg(values: Sequence[float], width: int = 80, height: int = 16) -> str:
    """A tiny inline SVG line of ``values`` (e.g. per-epoch losses); empty with < 2 finite."""
    points = [(k, float(v)) for k, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(points) < 2:
        return ""
    first, last = points[0][0], points[-1][0]
    low = min(v for _, v in points)
    high = max(v for _, v in points)
    span_x = max(last - first, 1)
    span_y = high - low if high > low else 1.0
    coords = " ".join(
        f"{(k - first) / span_x * (width - 2) + 1:.1f},"
        f"{(1 - (v - low) / span_y) * (height - 2) + 1:.1f}"
        for k, v in points
    )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'style="display:inline-block;vertical-align:middle">'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/></svg>'
    )


def format_duration(seconds: float | None) -> str:
    """``"1h 02m"``, ``"3m 05s"``, ``"12s"``; ``"–"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def progress_html(snapshot=None, state: str = "idle") -> str:
    """One-line HTML summary of training progress from a ``Snapshot`` (or just the state)."""
    state_text = f"<b>{html.escape(state)}</b>"
    if snapshot is None:
        return f'<span style="font:12px sans-serif">{state_text}</span>'
    stage_name = {1: "stage 1 (128-D)", 2: "stage 2 (2-D head)", 3: "stage 3 (fine-tune)"}
    parts = [
        state_text,
        html.escape(stage_name.get(snapshot.stage, f"stage {snapshot.stage}")),
        f"epoch {snapshot.epoch}/{snapshot.epochs_in_stage}"
        f" ({snapshot.total_epoch}/{snapshot.total_epochs} total)",
        f"loss {snapshot.loss:.3f} {sparkline_svg(snapshot.losses)}",
        f"{snapshot.images_per_second:,.0f} img/s",
        f"ETA {format_duration(snapshot.eta)}",
    ]
    return '<span style="font:12px sans-serif">' + " · ".join(parts) + "</span>"


class ControlPanel:
    """All ipywidgets of the Explorer except the canvas and the gallery.

    Parameters
    ----------
    color_options : sequence of str
        Choices of the colour dropdown (e.g. ``"label"``, metadata columns, ``"none"``).
    color_value : str
        Initially selected colouring.
    time_budget : float or None
        Initial budget in seconds; None selects an epoch budget.
    total_epochs : int
        Initial epoch budget (all stages together).
    """

    def __init__(
        self,
        color_options: Sequence[str],
        color_value: str,
        time_budget: float | None,
        total_epochs: int,
    ) -> None:
        self._watching = False
        self.start = widgets.Button(description="Start", icon="play", button_style="success",
                                    layout=_BUTTON, tooltip="Train a new map")
        self.pause = widgets.Button(description="Pause", icon="pause", layout=_BUTTON)
        # One button for both ways of going on: "Unpause" while paused, "Resume" (from
        # the checkpoint) for a stopped or loaded session; see set_state.
        self.unpause_resume = widgets.Button(description="Unpause", icon="play",
                                             layout=_BUTTON)
        self.stop = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                   layout=_BUTTON)
        self.budget_kind = widgets.Dropdown(
            options=[_BUDGET_TIME, _BUDGET_EPOCHS],
            value=_BUDGET_EPOCHS if time_budget is None else _BUDGET_TIME,
            layout=widgets.Layout(width="150px"),
            description="Budget", style={"description_width": "48px"},
        )
        minutes = 10.0 if time_budget is None else float(time_budget) / 60.0
        self.budget_minutes = widgets.BoundedFloatText(
            value=round(minutes, 2), min=0.05, max=100_000, step=1,
            layout=widgets.Layout(width="80px"),
        )
        self.budget_epochs = widgets.BoundedIntText(
            value=int(total_epochs), min=3, max=1_000_000, step=10,
            layout=widgets.Layout(width="80px"),
        )
        self.color = widgets.Dropdown(options=list(color_options), value=color_value,
                                      description="Colour", style={"description_width": "48px"},
                                      layout=widgets.Layout(width="200px"))
        self.progress_bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                                  layout=widgets.Layout(width="160px"))
        self.progress = widgets.HTML(progress_html())
        self.message = widgets.HTML("", layout=widgets.Layout(min_height="20px"))

        self.mode = widgets.ToggleButtons(
            options=list(SELECTION_MODES), value="replace",
            tooltips=["New selection replaces", "Add to selection", "Remove from selection",
                      "Keep only what is also in the new selection"],
            style={"button_width": "72px"},
        )
        self.undo = widgets.Button(description="Undo", icon="undo", layout=_BUTTON)
        self.clear = widgets.Button(description="Clear", layout=_BUTTON)
        self.count = widgets.HTML("0 selected")
        # The value reaches the kernel when committed (Enter, or leaving the box changed).
        self.search_text = widgets.Text(placeholder="search labels, file names, metadata",
                                        continuous_update=False,
                                        layout=widgets.Layout(width="200px"))
        self.search_regex = widgets.ToggleButton(value=False, description=".*",
                                                 tooltip="Search with a regular expression",
                                                 layout=widgets.Layout(width="40px"))
        self.search_button = widgets.Button(description="Search", icon="search",
                                            layout=widgets.Layout(width="88px"))
        self.tag_name = widgets.Text(placeholder="tag name", layout=widgets.Layout(width="150px"))
        self.tag_button = widgets.Button(description="Tag", icon="tag", layout=_BUTTON)
        self.tags_summary = widgets.HTML("")
        self.csv_path = widgets.Text(value="selection.csv", layout=widgets.Layout(width="200px"))
        self.csv_button = widgets.Button(description="Export CSV", layout=widgets.Layout(width="110px"))
        self.files_path = widgets.Text(value="selection_export",
                                       layout=widgets.Layout(width="200px"))
        self.files_button = widgets.Button(description="Export files",
                                           layout=widgets.Layout(width="110px"))
        self.overwrite = widgets.Checkbox(value=False, description="overwrite", indent=False,
                                          layout=widgets.Layout(width="100px"))

        self.replay = widgets.IntSlider(value=0, min=0, max=0, description="Replay",
                                        continuous_update=True, disabled=True,
                                        layout=widgets.Layout(width="420px"))
        self.live = widgets.ToggleButton(value=True, description="live", icon="circle",
                                         tooltip="Follow the newest map",
                                         layout=widgets.Layout(width="70px"))
        self.replay_info = widgets.HTML("")
        self._sync_budget_visibility()
        self.budget_kind.observe(lambda change: self._sync_budget_visibility(), names="value")

    def watching(self) -> None:
        """Show the controls of a run that trains elsewhere: no Start, Pause, Unpause or
        budget (the run is controlled where it runs); Stop stops watching."""
        self._watching = True
        for widget in (self.start, self.pause, self.unpause_resume, self.budget_kind,
                       self.budget_minutes, self.budget_epochs):
            # A fresh Layout: the buttons share one (hiding it would hide Stop too).
            widget.layout = widgets.Layout(display="none")
        self.stop.description = "Stop watching"
        self.stop.tooltip = "Stop following the snapshot folder (the run goes on)"

    def _sync_budget_visibility(self) -> None:
        if self._watching:
            return
        by_time = self.budget_kind.value == _BUDGET_TIME
        self.budget_minutes.layout.display = None if by_time else "none"
        self.budget_epochs.layout.display = "none" if by_time else None

    @property
    def budget(self) -> tuple[str, float]:
        """``("time", seconds)`` or ``("epochs", total)`` from the budget inputs."""
        if self.budget_kind.value == _BUDGET_TIME:
            return "time", float(self.budget_minutes.value) * 60.0
        return "epochs", float(self.budget_epochs.value)

    def set_state(self, state: str, can_resume: bool = False) -> None:
        """Enable exactly the training buttons that make sense in trainer ``state``.

        ``can_resume``: a checkpoint of a stopped or loaded session can be trained
        further; the Unpause button then offers "Resume".
        """
        running = state in ("running", "starting")
        paused = state == "paused"
        stopping = state == "stopping"
        self.start.disabled = running or paused or stopping
        self.pause.disabled = state != "running"
        resume = can_resume and not paused
        self.unpause_resume.description = "Resume" if resume else "Unpause"
        self.unpause_resume.tooltip = ("Continue training from the saved checkpoint" if resume
                                       else "Continue the paused run")
        self.unpause_resume.disabled = not (paused or resume)
        self.stop.disabled = not (running or paused)
        self.budget_kind.disabled = self.start.disabled
        self.budget_minutes.disabled = self.start.disabled
        self.budget_epochs.disabled = self.start.disabled

    def on_search(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when a query is committed in the search box (Enter, or leaving
        it changed) or Search is clicked (which also repeats the same query)."""
        self.search_button.on_click(lambda button: callback())
        # Not Text.on_submit: its message overtakes the box's last keystrokes, which the
        # browser holds back while an earlier update is unanswered, so a quick Enter would
        # search for a stale query.  A committed value carries the query itself.
        self.search_text.observe(lambda change: change["new"].strip() and callback(),
                                 names="value")

    def show_messages(self, messages: Sequence[tuple[float, str, str]]) -> None:
        """Show the last :data:`SHOWN_MESSAGES` of ``messages`` ((time, kind, text), oldest
        first), newest on top, escaped; ``kind`` is info, warning or error."""
        rows = []
        for stamp, level, text in reversed(list(messages)[-SHOWN_MESSAGES:]):
            clock = time.strftime("%H:%M:%S", time.localtime(stamp))
            rows.append(
                f'<div style="color:{_MESSAGE_COLORS.get(level, "#333")};font:12px sans-serif">'
                f"{clock} {html.escape(level)}: {html.escape(text)}</div>"
            )
        self.message.value = "".join(rows)

    def training_row(self) -> widgets.Widget:
        """Buttons, budget, colouring and progress, in one or two lines."""
        return widgets.VBox([
            widgets.HBox([self.start, self.pause, self.unpause_resume, self.stop, self.budget_kind,
                          self.budget_minutes, self.budget_epochs, self.color]),
            widgets.HBox([self.progress_bar, self.progress]),
        ])

    def curation_column(self) -> widgets.Widget:
        """Selection mode, undo, tagging and exports, stacked for a side panel."""
        return widgets.VBox([
            widgets.HTML("<b>Selection</b> (lasso or box on the map)"),
            self.mode,
            widgets.HBox([self.count, self.undo, self.clear]),
            widgets.HBox([self.search_text, self.search_regex, self.search_button]),
            widgets.HBox([self.tag_name, self.tag_button]),
            self.tags_summary,
            widgets.HBox([self.csv_path, self.csv_button]),
            widgets.HBox([self.files_path, self.files_button]),
            self.overwrite,
        ])

    def replay_row(self) -> widgets.Widget:
        """The replay slider with its live toggle."""
        return widgets.HBox([self.replay, self.live, self.replay_info])
