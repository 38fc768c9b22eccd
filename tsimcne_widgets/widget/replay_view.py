"""What the Explorer's canvas shows: the newest map (live) or a frame of the replay.

A mixin of :class:`~tsimcne_widgets.widget.explorer.Explorer`, kept apart so each
module stays small.  The newest map and whether it is provisional come from the
explorer's :class:`~tsimcne_widgets.widget.state.ExplorerState`; which frame is on
screen (``_shown_frame``) is the view's own business, so it is not in the state.
"""

from __future__ import annotations

import numpy as np

from .canvas import PROVISIONAL_TEXT

__all__ = ["ReplayView"]


class ReplayView:
    """Live map and replay slider of :class:`~tsimcne_widgets.widget.explorer.Explorer`.

    Expects the attributes the Explorer sets up: ``model``, ``canvas``, ``controls``,
    ``replay``, ``_shown_frame`` (None while live) and ``_moving_slider``.
    """

    def _show_map(self, change) -> None:
        # The model sets `provisional` before `map`, so it belongs to this map.
        if self._shown_frame is None and change["new"] is not None:
            self._display_map(change["new"], self.model.provisional)

    def _show_provisional(self, change) -> None:
        if self._shown_frame is None:
            self.canvas.set_status(PROVISIONAL_TEXT if change["new"] else None)

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
        self._go_live()
        if self.model.map is not None:
            self._display_map(self.model.map, self.model.provisional)
        self._replay_label()
        return self

    def _go_live(self) -> None:
        self._shown_frame = None
        self._moving_slider = True
        try:
            self.controls.live.value = True
            self.controls.replay.value = self.controls.replay.max
        finally:
            self._moving_slider = False

