"""ExplorerState, the Explorer's state apart from its view, on its own (no widget, no torch)."""
from __future__ import annotations

import json
import subprocess
import sys

import ipywidgets as widgets
import numpy as np
import pytest
import traitlets

from tsimcne_widgets.curation.tags import TagStore
from tsimcne_widgets.widget.state import (
    MAX_MESSAGES,
    ExplorerState,
    Indices,
    StateError,
)

N = 12


@pytest.fixture
def state() -> ExplorerState:
    return ExplorerState(N, ["label", "site", "none"])


def test_the_state_module_imports_no_ui_library_and_no_torch():
    code = ("import sys, json, tsimcne_widgets.widget.state\n"
            "print(json.dumps(sorted(m for m in ('bokeh', 'ipywidgets', 'jupyter_bokeh', "
            "'datashader', 'torch') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout) == []


def test_selection_notifies_only_real_changes_and_keeps_its_undo_history(state):
    seen = []
    state.observe(lambda change: seen.append((change.old.tolist(), change.new.tolist())),
                  "selection")
    state.selection = [7, 2, 2]
    state.selection = np.array([2, 7])                  # the same set
    state.selection = np.isin(np.arange(N), [2, 7])     # the same, as a mask
    state.select([7], mode="add")                       # adds nothing
    state.select([2], mode="subtract")
    state.selection_model.set([9], mode="add")          # the model directly: the trait follows
    assert state.undo() and state.selection.tolist() == [7]
    assert seen == [([], [2, 7]), ([2, 7], [7]), ([7], [7, 9]), ([7, 9], [7])]
    assert isinstance(state.selection, Indices) and state.selection.dtype == np.int64
    with pytest.raises(ValueError):
        state.selection.setflags(write=True)  # read-only: observers share it


def test_bad_selections_raise_clear_errors_and_change_nothing(state):
    state.select([1, 2])
    seen = []
    state.observe(lambda change: seen.append(change), "selection")
    with pytest.raises(ValueError, match=r"out of range: got 12, valid range is 0\.\.11"):
        state.selection = [3, N]
    with pytest.raises(ValueError, match="mask .* has length 3, expected 12"):
        state.selection = [True, False, True]
    with pytest.raises(traitlets.TraitError):
        state.selection = "1, 2"
    assert state.selection.tolist() == [1, 2] and seen == []
    assert state.undo() and state.selection.tolist() == []  # the history lost nothing


def test_indices_compare_as_sets_only_with_each_other(state):
    a = state.select([1, 5])
    b = ExplorerState(N, ["none"]).select([5, 1])
    assert (a == b) is True and (a != b) is False
    assert (a == state.select([1])) is False
    assert (a == 5).tolist() == [False, True]          # element-wise with anything else
    assert type(a + 1) is np.ndarray and type(a == 5) is np.ndarray
    np.testing.assert_array_equal(a, [1, 5])


def test_selection_links_both_ways_with_traitlets_and_ipywidgets(state):
    picker = widgets.SelectMultiple(options=list(range(N)))
    # ipywidgets.link is traitlets.link: it checks the source with `!=` after each update,
    # which raises on plain numpy arrays (jupyter-widgets/traittypes#45).
    widgets.link((state, "selection"), (picker, "index"),
                 transform=(lambda sel: tuple(sel.tolist()), list))
    picker.index = (4, 0)
    assert state.selection.tolist() == [0, 4]
    state.select([6], mode="add")
    assert picker.index == (0, 4, 6)

    other = ExplorerState(N, ["none"])
    traitlets.link((state, "selection"), (other, "selection"))
    assert other.selection.tolist() == [0, 4, 6]
    other.select([0], mode="subtract")
    assert state.selection.tolist() == [4, 6] and picker.index == (4, 6)


def test_colour_and_mode_are_checked(state):
    dropdown = widgets.Dropdown(options=state.color_options)
    widgets.link((state, "color_column"), (dropdown, "value"))
    dropdown.value = "site"
    assert state.color_column == "site"
    with pytest.raises(ValueError, match=r"cannot colour by 'size'; choose one of \['label'"):
        state.color_column = "size"
    with pytest.raises(traitlets.TraitError, match="selection_mode"):
        state.selection_mode = "xor"
    assert state.color_column == dropdown.value == "site" and state.selection_mode == "replace"
    with pytest.raises(ValueError, match="must include 'none'"):
        ExplorerState(N, ["label"])


def test_map_is_a_checked_read_only_copy_and_provisional_comes_first(state):
    xy = np.arange(2 * N, dtype=np.float64).reshape(N, 2)
    order = []
    state.observe(lambda change: order.append(("map", state.provisional)), "map")
    state.set_map(xy, provisional=True)
    xy[0, 0] = -1.0  # the caller's array stays the caller's
    assert state.map.dtype == np.float32 and state.map[0, 0] == 0.0
    assert not state.map.flags.writeable and order == [("map", True)]
    with pytest.raises(StateError, match=r"must have shape \(12, 2\), got \(3, 2\)"):
        state.set_map(np.zeros((3, 2)), provisional=False)
    assert state.provisional and state.map[1, 1] == 3.0  # unchanged


def test_messages_are_kept_bounded_and_checked(state):
    for k in range(MAX_MESSAGES + 5):
        state.report(f"note {k}", "info")
    state.report("broke", "error")
    assert len(state.messages) == MAX_MESSAGES
    assert state.messages[-1].kind == "error" and state.messages[-1].text == "broke"
    assert state.messages[0].text == "note 6"
    with pytest.raises(ValueError, match="kind must be one of"):
        state.report("?", "shout")
    assert state.messages[-1].text == "broke"


def test_tag_changes_bump_the_version(state):
    versions = []
    state.observe(lambda change: versions.append(change.new), "tags_version")
    state.tag_store.add("keep", [1, 2])
    state.tag_store.add("keep", [1])  # no change
    state.tag_store.add("drop", [3])
    assert versions == [1, 2]


def test_restore_checks_everything_before_changing_anything(state):
    state.set_map(np.zeros((N, 2)))
    state.select([1])
    state.tag_store.add("old", [0])
    tags = TagStore(N)
    tags.add("keep", [2, 3])
    good = dict(map=np.ones((N, 2)), provisional=True, color_column="site", selection=[2, 3],
                selection_mode="add", tags=tags)
    wrong_tags = TagStore(N + 1)
    for bad, message in ((dict(map=np.ones((N + 1, 2))), "shape"),
                         (dict(selection=[N]), "out of range"),
                         (dict(color_column="size"), "cannot colour by"),
                         (dict(selection_mode="xor"), "selection mode"),
                         (dict(tags=wrong_tags), "tags are for 13 images")):
        with pytest.raises(ValueError, match=message):
            state.restore(**{**good, **bad})
        assert state.map.max() == 0 and state.selection.tolist() == [1]
        assert state.color_column == "label" and state.tag_store.names == ("old",)
    state.restore(**good)
    assert state.map.min() == 1 and state.provisional and state.color_column == "site"
    assert state.selection.tolist() == [2, 3] and state.selection_mode == "add"
    assert state.tag_store.names == ("keep",) and state.tag_store.indices("keep").tolist() == [2, 3]
