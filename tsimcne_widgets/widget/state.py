"""The Explorer's state apart from its view: one plain, observable object.

:class:`ExplorerState` holds what the user sees and chose -- the map (and
whether it is a provisional view), the colouring, the selection and its mode,
the tags and the messages -- as traitlets, the way jupyter-scatter keeps its
``Scatter`` (state) apart from the ``JupyterScatter`` widget (view).  The
ipywidgets/Bokeh view of :class:`~tsimcne_widgets.widget.explorer.Explorer` is
built from it and observes it, and :mod:`~tsimcne_widgets.widget.persistence`
saves and restores it through its public traits and :meth:`ExplorerState.restore`.

Only numpy and traitlets (which ships with ipywidgets): no Bokeh, no
ipywidgets, no torch, so the state can be driven and tested on its own.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import traitlets

from tsimcne_widgets.curation.selection import SELECTION_MODES, SelectionModel
from tsimcne_widgets.curation.tags import TagStore

__all__ = ["ExplorerState", "IndexArray", "Indices", "Message", "StateError", "NO_COLOR",
           "MESSAGE_KINDS", "MAX_MESSAGES"]

#: The colouring that colours every point alike.
NO_COLOR = "none"
#: Kinds of :class:`Message`, mildest first.
MESSAGE_KINDS = ("info", "warning", "error")
#: How many messages :attr:`ExplorerState.messages` keeps (the widget shows the last few).
MAX_MESSAGES = 20


class StateError(traitlets.TraitError, ValueError):
    """A value the state cannot take (a ``ValueError`` too, as the Explorer's API raised)."""


class Indices(np.ndarray):
    """Sorted unique int64 image indices, read-only.

    A plain ``numpy.ndarray`` in every respect but one: two ``Indices`` compare
    as sets, ``a == b`` is a single bool (``np.array_equal``).  Comparisons
    with anything else (numbers, lists, other arrays) stay element-wise.  This
    is what lets traitlets notice that an assignment changed nothing, and lets
    ``traitlets.link`` / ``ipywidgets.link`` check a linked selection, which
    raise "truth value of an array is ambiguous" on plain arrays
    (jupyter-widgets/traittypes#45).
    """

    def __eq__(self, other):
        if isinstance(other, Indices):
            return bool(np.array_equal(self.view(np.ndarray), other.view(np.ndarray)))
        return super().__eq__(other)

    def __ne__(self, other):
        if isinstance(other, Indices):
            return not self.__eq__(other)
        return super().__ne__(other)

    __hash__ = None  # mutable-looking type: like ndarray, not hashable

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # Arithmetic and element-wise comparisons give plain arrays: a sum or a
        # mask of a selection is no selection, and must not compare as a set.
        if return_scalar:
            return array[()]
        return array.view(np.ndarray) if isinstance(array, np.ndarray) else array


def as_indices(indices: np.ndarray) -> Indices:
    """View validated, sorted unique int64 ``indices`` as read-only :class:`Indices`."""
    view = np.asarray(indices, dtype=np.int64).view(Indices)
    view.flags.writeable = False
    return view


_EMPTY = as_indices(np.empty(0, dtype=np.int64))


class IndexArray(traitlets.TraitType):
    """A trait holding :class:`Indices`, empty by default.

    The owner converts and checks assignments in a ``@traitlets.validate``
    method (only it knows how many images there are, so a boolean mask is
    passed through to it untouched); this trait type only refuses what is not
    array-like.  Because :class:`Indices` compare as sets, assigning an equal
    selection notifies no observer.
    """

    default_value = _EMPTY
    info_text = "image indices (integers) or a boolean mask"

    def validate(self, obj, value):
        if isinstance(value, (str, bytes, dict)) or value is None:
            self.error(obj, value)
        return value


class Message(NamedTuple):
    """One message of the widget's message area."""

    time: float
    kind: str
    text: str


class ExplorerState(traitlets.HasTraits):
    """Map, colouring, selection, tags and messages of an Explorer, observable.

    Parameters
    ----------
    n : int
        Number of images.
    color_options : sequence of str
        What the points can be coloured by; must include :data:`NO_COLOR`.
    color_column : str or None
        Initial colouring (default: the first option).

    Attributes
    ----------
    selection_model : SelectionModel
        The selection with its undo history; :attr:`selection` mirrors it, so
        changing either changes both.
    tag_store : TagStore
        The tags; every change bumps :attr:`tags_version`.

    Notes
    -----
    Observe with ``state.observe(callback, names)``; the callback gets a
    traitlets change (``change.new``, ``change.old``).  Every trait notifies
    only on a real change, except :attr:`map`, which notifies on every
    assignment (a training run sends a new map every few seconds).

    Examples
    --------
    >>> state = ExplorerState(5, ["label", "none"])
    >>> seen = []
    >>> state.observe(lambda change: seen.append(change.new.tolist()), "selection")
    >>> state.select([3, 1]).tolist()
    [1, 3]
    >>> state.selection = [1, 3]          # the same selection: no notification
    >>> seen
    [[1, 3]]
    >>> state
    ExplorerState(n=5, map=none, selected=2, color_column='label', tags=[])
    """

    #: (N, 2) float32 map on show (read-only array), None before any map.
    map = traitlets.Instance(np.ndarray, allow_none=True)
    #: Whether :attr:`map` is a provisional view (PCA of the 128-D output in stage 1).
    provisional = traitlets.Bool(False)
    #: What the points are coloured by: a value of :attr:`color_options`.
    color_column = traitlets.Unicode(NO_COLOR)
    #: The selected images: sorted unique int64 indices (read-only :class:`Indices`).
    selection = IndexArray()
    #: How a lasso or box combines with the selection.
    selection_mode = traitlets.Enum(SELECTION_MODES, default_value="replace")
    #: Bumped on every change of :attr:`tag_store` (observe it to follow the tags).
    tags_version = traitlets.Int(0)
    #: The latest :class:`Message` tuples, oldest first (at most :data:`MAX_MESSAGES`).
    messages = traitlets.Tuple()

    def __init__(self, n: int, color_options, color_column: str | None = None) -> None:
        super().__init__()
        self.n = int(n)
        self.color_options: tuple[str, ...] = tuple(str(c) for c in color_options)
        if NO_COLOR not in self.color_options:
            raise ValueError(f"color_options must include {NO_COLOR!r}, got {self.color_options}")
        self.color_column = self.color_options[0] if color_column is None else color_column
        self.selection_model = SelectionModel(self.n)
        self.tag_store = TagStore(self.n)
        # The model holds the truth (and the undo history); the trait follows it.
        # Re-assigning the model's own selection to the trait is a no-op for the
        # model, so the two never bounce.
        self.selection_model.observe(self._follow_selection_model)
        self.tag_store.observe(self._count_tag_change)

    def __repr__(self) -> str:
        shown = "none" if self.map is None else ("provisional" if self.provisional else "yes")
        return (f"ExplorerState(n={self.n}, map={shown}, selected={len(self.selection)}, "
                f"color_column={self.color_column!r}, tags={list(self.tag_store.names)})")

    # ------------------------------------------------------------------ validation
    @traitlets.validate("selection")
    def _check_selection(self, proposal) -> Indices:
        return as_indices(self.selection_model.set(proposal["value"]))

    def _follow_selection_model(self, indices) -> None:
        self.selection = as_indices(indices)

    @traitlets.validate("color_column")
    def _check_color_column_trait(self, proposal) -> str:
        return self._check_color_column(proposal["value"])

    def _check_color_column(self, column: str) -> str:
        if column not in self.color_options:
            raise StateError(f"cannot colour by {column!r}; choose one of "
                             f"{list(self.color_options)}")
        return column

    @traitlets.validate("map")
    def _check_map_trait(self, proposal) -> np.ndarray | None:
        xy = proposal["value"]
        return None if xy is None else self.check_map(xy)

    def check_map(self, xy) -> np.ndarray:
        """``xy`` as the state stores a map: a read-only float32 (N, 2) copy.

        Raises
        ------
        StateError
            If ``xy`` does not have one row of two coordinates per image.
        """
        shape = np.shape(xy)
        if shape != (self.n, 2):
            raise StateError(f"the map must have shape ({self.n}, 2), got {shape}")
        xy = np.array(xy, dtype=np.float32)  # a copy: the caller may reuse its array
        xy.flags.writeable = False
        return xy

    @traitlets.validate("messages")
    def _check_messages(self, proposal) -> tuple:
        messages = tuple(Message(*m) for m in proposal["value"])
        bad = [m.kind for m in messages if m.kind not in MESSAGE_KINDS]
        if bad:
            raise StateError(f"message kind must be one of {MESSAGE_KINDS}, got {bad[0]!r}")
        return messages[-MAX_MESSAGES:]

    def _count_tag_change(self, store) -> None:
        self.tags_version += 1

    # ------------------------------------------------------------------ changes
    def set_map(self, xy, provisional: bool = False) -> None:
        """Show map ``xy`` (N×2; NaN rows are not drawn), provisional or not.

        ``provisional`` changes first, so an observer of :attr:`map` sees both new.
        """
        xy = None if xy is None else self.check_map(xy)  # nothing changes on a bad map
        self.provisional = bool(provisional)
        self.map = xy

    def select(self, indices, mode: str = "replace") -> Indices:
        """Combine ``indices`` with the selection (``mode``: replace, add, subtract,
        intersect) and return the new selection."""
        self.selection_model.set(indices, mode=mode)
        return self.selection

    def undo(self) -> bool:
        """Go back to the previous selection; False when there is none."""
        return self.selection_model.undo()

    def redo(self) -> bool:
        """Re-apply the last undone selection change; False when there is none."""
        return self.selection_model.redo()

    @property
    def can_undo(self) -> bool:
        """bool : Whether :meth:`undo` would change the selection."""
        return self.selection_model.can_undo

    def clear_selection(self) -> None:
        """Select nothing (undoable)."""
        self.selection_model.clear()

    def report(self, text: str, kind: str = "info") -> None:
        """Add a message (``kind``: info, warning or error)."""
        self.messages = self.messages + (Message(time.time(), kind, str(text)),)

    def restore(self, *, map=None, provisional: bool = False, color_column: str | None = None,
                selection=None, selection_mode: str | None = None,
                tags: TagStore | None = None) -> None:
        """Take over a saved state; every value is checked before anything changes.

        Parameters
        ----------
        map : array_like of shape (N, 2) or None
            None keeps the current map.
        provisional : bool
            Whether ``map`` is a provisional view.
        color_column, selection_mode : str or None
            None keeps the current one.
        selection : array_like of int or None
            None keeps the current selection.
        tags : TagStore or None
            Replaces the tags (None keeps them).

        Raises
        ------
        StateError, ValueError, TypeError
            For a value the state cannot take; the state is then unchanged.
        """
        if map is not None:
            map = self.check_map(map)
        if color_column is not None:
            self._check_color_column(color_column)
        if selection_mode is not None and selection_mode not in SELECTION_MODES:
            raise StateError(f"selection mode must be one of {SELECTION_MODES}, "
                             f"got {selection_mode!r}")
        if selection is not None:
            SelectionModel(self.n).set(selection)  # checks the indices, changes nothing here
        if tags is not None and tags.n != self.n:
            raise StateError(f"the tags are for {tags.n} images, but there are {self.n}")
        if map is not None:
            self.set_map(map, provisional)
        if color_column is not None:
            self.color_column = color_column
        if selection_mode is not None:
            self.selection_mode = selection_mode
        if tags is not None:
            self.tag_store.clear()
            for name in tags.names:
                self.tag_store.add(name, tags.indices(name))
        if selection is not None:
            self.select(selection)
