"""Selection algebra, undo/redo, tags and their files, and the suggestion helpers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.curation.selection import SelectionModel
from tsimcne_widgets.curation.suggestions import (
    outlier_scores,
    suggest_duplicates,
    suggest_outliers,
)
from tsimcne_widgets.curation.tags import TagStore, validate_tag_name

N = 40


def _apply_reference(current: set[int], picked: set[int], mode: str) -> set[int]:
    return {"replace": lambda: set(picked), "add": lambda: current | picked,
            "subtract": lambda: current - picked, "intersect": lambda: current & picked}[mode]()


# -- SelectionModel ------------------------------------------------------------------------
def test_selection_modes_undo_redo_match_python_sets(rng):
    model = SelectionModel(N, history=1000)
    # Reference: the list of distinct states visited, and a cursor into it.
    states: list[set[int]] = [set()]
    cursor = 0
    for _ in range(300):
        op = rng.choice(["set", "set", "set", "undo", "redo", "clear"])
        if op == "undo":
            assert model.undo() == (cursor > 0)
            cursor = max(0, cursor - 1)
        elif op == "redo":
            assert model.redo() == (cursor < len(states) - 1)
            cursor = min(len(states) - 1, cursor + 1)
        else:
            if op == "clear":
                picked, mode = set(), "replace"
                model.clear()
            else:
                picked = set(rng.integers(0, N, rng.integers(0, 12)).tolist())
                mode = str(rng.choice(["replace", "add", "subtract", "intersect"]))
                # Mix the accepted input forms: lists, sets, bool masks.
                form = rng.integers(0, 3)
                arg = (sorted(picked) if form == 0 else picked if form == 1
                       else np.isin(np.arange(N), list(picked)))
                model.set(arg, mode=mode)
            new = _apply_reference(states[cursor], picked, mode)
            if new != states[cursor]:  # no-op changes are not recorded
                states = states[: cursor + 1] + [new]
                cursor += 1
        expected = np.array(sorted(states[cursor]), dtype=np.int64)
        np.testing.assert_array_equal(model.indices, expected)
        assert model.indices.dtype == np.int64
        assert model.count == len(expected)
        np.testing.assert_array_equal(np.flatnonzero(model.mask), expected)
        assert model.can_undo == (cursor > 0)
        assert model.can_redo == (cursor < len(states) - 1)


def test_history_is_bounded():
    model = SelectionModel(100, history=5)
    for i in range(20):
        model.set([i])
    undone = 0
    while model.undo():
        undone += 1
    assert undone == 5
    np.testing.assert_array_equal(model.indices, [14])


def test_new_change_clears_redo():
    model = SelectionModel(10)
    model.set([1])
    model.set([2])
    model.undo()
    model.set([3], mode="add")
    assert not model.redo()
    np.testing.assert_array_equal(model.indices, [1, 3])


def test_observers_get_new_selection_and_can_unsubscribe():
    model = SelectionModel(10)
    seen: list[list[int]] = []
    stop = model.observe(lambda sel: seen.append(sel.tolist()))
    model.set([3, 1, 3])
    model.set([5], mode="add")
    model.set([1, 3, 5])  # unchanged: no notification
    model.undo()
    model.redo()
    stop()
    model.clear()
    assert seen == [[1, 3], [1, 3, 5], [1, 3], [1, 3, 5]]


def test_failing_observer_does_not_starve_the_others():
    model = SelectionModel(5)
    seen = []

    def broken(_):
        raise RuntimeError("observer bug")

    model.observe(broken)
    model.observe(seen.append)
    with pytest.raises(RuntimeError, match="observer bug"):
        model.set([2])
    assert len(seen) == 1
    np.testing.assert_array_equal(model.indices, [2])


def test_selection_is_read_only():
    model = SelectionModel(5)
    model.set([1, 2])
    with pytest.raises(ValueError):
        model.indices[0] = 4


@pytest.mark.parametrize("bad", [[10], [-1], [0, 3, 99]])
def test_out_of_range_names_valid_range(bad):
    model = SelectionModel(10)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        model.set(bad)
    assert model.count == 0 and not model.can_undo


def test_bad_inputs_are_rejected_clearly():
    model = SelectionModel(4)
    with pytest.raises(ValueError, match="length 3, expected 4"):
        model.set(np.array([True, False, True]))
    with pytest.raises(TypeError, match="integers or a boolean mask"):
        model.set([0.5, 1.5])
    with pytest.raises(ValueError, match="mode must be one of"):
        model.set([1], mode="xor")
    model.set(np.array([True, False, True, True]))
    np.testing.assert_array_equal(model.indices, [0, 2, 3])
    assert 2 in model and 1 not in model


# -- tag names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "a/b", "", "a\\b", ".hidden", "..", "x" * 65,
                                  "a\x00b", "a;b", " lead", "trail ", "con", "a:b", 'a"b'])
def test_bad_tag_names_rejected_with_allowed_characters(name):
    with pytest.raises(ValueError, match="Allowed: letters, digits"):
        validate_tag_name(name)
    store = TagStore(5)
    with pytest.raises(ValueError, match="invalid tag name"):
        store.add(name, [1])
    assert store.names == ()


@pytest.mark.parametrize("name", ["cats", "Good dogs (2)", "été", "x" * 64, "v1.2", "a-b_c"])
def test_good_tag_names_accepted(name):
    assert validate_tag_name(name) == name


def test_tag_name_must_be_str():
    with pytest.raises(TypeError):
        validate_tag_name(3)


# -- TagStore ------------------------------------------------------------------------------
def test_tag_store_add_merge_remove_rename():
    store = TagStore(10)
    changes = []
    store.observe(lambda s: changes.append(s.names))
    store.add("cats", [3, 1])
    store.add("cats", [1, 7])  # duplicate name merges
    store.add("dogs", np.array([False, True] + [False] * 8))
    store.add("later")  # empty tag
    np.testing.assert_array_equal(store.indices("cats"), [1, 3, 7])
    assert store.names == ("cats", "dogs", "later")
    assert store.empty_names == ("later",)
    store.remove("cats", [3])
    np.testing.assert_array_equal(store.indices("cats"), [1, 7])
    store.rename("cats", "felines")
    assert store.names == ("felines", "dogs", "later")
    with pytest.raises(ValueError, match="already exists"):
        store.rename("felines", "dogs")
    with pytest.raises(KeyError, match="existing tags"):
        store.indices("cats")
    store.remove("later")
    assert store.names == ("felines", "dogs")
    assert store.tags_of([1, 7, 0]) == [("felines", "dogs"), ("felines",), ()]
    assert len(changes) == 7
    with pytest.raises(ValueError, match=r"0\.\.9"):
        store.add("dogs", [10])


def test_frames_long_and_wide():
    store = TagStore(6)
    store.add("a", [0, 2])
    store.add("b", [2, 5])
    store.add("empty")
    assert store.tags_of([2, 1, 5, 2]) == [("a", "b"), (), ("b",), ("a", "b")]
    long = store.to_frame()
    assert list(long.columns) == ["index", "tag"]
    assert list(zip(long["index"], long["tag"])) == [(0, "a"), (2, "a"), (2, "b"), (5, "b")]
    with_empty = store.to_frame(include_empty=True)
    assert with_empty["index"].isna().sum() == 1
    assert with_empty.loc[with_empty["index"].isna(), "tag"].tolist() == ["empty"]
    wide = store.membership(6)
    assert list(wide.columns) == ["a", "b", "empty"]
    assert wide.dtypes.eq(bool).all()
    assert wide["a"].tolist() == [True, False, True, False, False, False]
    assert wide["b"].tolist() == [False, False, True, False, False, True]
    assert not wide["empty"].any()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tags_save_load_round_trip(tmp_path, suffix):
    store = TagStore(50)
    store.add("keep", [1, 2, 49])
    store.add("Bad photos (blurry)", [0, 2])
    store.add("été")
    store.add("123")  # looks like a number: must stay a string name
    store.add("123", [4])
    path = store.save(tmp_path / f"tags{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tags{suffix}"]  # no temp left
    loaded = TagStore.load(path, 50)
    assert loaded.names == store.names
    for name in store.names:
        np.testing.assert_array_equal(loaded.indices(name), store.indices(name))
    assert loaded.empty_names == ("été",)
    with pytest.raises(ValueError, match=r"0\.\.39"):
        TagStore.load(path, 40)  # index 49 no longer exists


def test_load_rejects_bad_files(tmp_path):
    bad_name = tmp_path / "bad_name.csv"
    pd.DataFrame({"index": [1], "tag": ["../escape"]}).to_csv(bad_name, index=False)
    with pytest.raises(ValueError, match="invalid tag name"):
        TagStore.load(bad_name, 5)
    bad_index = tmp_path / "bad_index.csv"
    bad_index.write_text("index,tag\n1.5,a\n")
    with pytest.raises(ValueError, match="not an integer"):
        TagStore.load(bad_index, 5)
    wrong_cols = tmp_path / "wrong.csv"
    wrong_cols.write_text("i,t\n1,a\n")
    with pytest.raises(ValueError, match="missing column"):
        TagStore.load(wrong_cols, 5)
    with pytest.raises(ValueError, match="suffix"):
        TagStore(5).save(tmp_path / "tags.txt")
    with pytest.raises(FileNotFoundError):
        TagStore.load(tmp_path / "absent.csv", 5)


# -- suggestions ---------------------------------------------------------------------------
def _clusters(rng, n_per=150):
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    # Clusters of very different density: the score must be relative to the local scale.
    scales = np.array([0.5, 2.0, 1.0])
    parts = [c + s * rng.normal(size=(n_per, 2)) for c, s in zip(centres, scales)]
    return np.concatenate(parts)


def test_outliers_found(rng):
    xy = _clusters(rng)
    planted = np.array([[10.0, 10.0], [-12.0, 3.0], [25.0, 25.0], [6.0, -9.0]])
    xy = np.concatenate([xy, planted])
    planted_idx = set(range(len(xy) - 4, len(xy)))
    assert set(suggest_outliers(xy, k=15, top=4).tolist()) == planted_idx
    default = suggest_outliers(xy)
    assert planted_idx <= set(default.tolist())
    assert len(default) <= 4 + 0.01 * len(xy)  # few false alarms in Gaussian tails
    scores = outlier_scores(xy)
    assert np.median(scores[:-4]) < 1.5 < scores[-4:].min()
    # Most isolated first.
    assert default[0] in planted_idx


def test_outliers_edge_cases():
    assert suggest_outliers(np.zeros((2, 2))).size == 0
    assert suggest_outliers(np.zeros((30, 2))).size == 0  # all coincide: nothing stands out
    with pytest.raises(ValueError, match="NaN"):
        suggest_outliers(np.array([[0.0, np.nan]] * 5))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        suggest_outliers(np.zeros((5, 3)))


def test_duplicates_found(rng):
    n = 300
    xy = rng.uniform(0, 30, size=(n, 2))
    images = rng.integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)
    planted = [[10, 200], [31, 77, 150], [5, 299]]
    for group in planted:
        for j in group[1:]:
            noise = rng.integers(-2, 3, size=images[0].shape)
            images[j] = np.clip(images[group[0]].astype(int) + noise, 0, 255)
            xy[j] = xy[group[0]] + rng.normal(scale=1e-3, size=2)
    # Decoys: coincident in the map but different pixels; same pixels but far apart.
    xy[40] = xy[41] + 1e-3
    images[60] = images[61]
    xy[60], xy[61] = [0.0, 0.0], [30.0, 30.0]
    groups = suggest_duplicates(xy, images)
    assert [g.tolist() for g in groups] == [sorted(g) for g in sorted(planted)]
    assert all(g.dtype == np.int64 for g in groups)
    # Features instead of pixels, with the threshold in feature units.
    features = images.reshape(n, -1).astype(np.float32) / 255
    assert len(suggest_duplicates(xy, features, pixel_threshold=0.02)) == 3


def test_duplicates_input_checks(rng):
    xy = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="rows"):
        suggest_duplicates(xy, np.zeros((9, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="max_pairs"):
        suggest_duplicates(xy, np.zeros((10, 4, 4, 3), np.uint8), map_radius=100, max_pairs=5)
    assert suggest_duplicates(xy, np.zeros((10, 4, 4, 3), np.uint8), map_radius=1e-9) == []


def test_tag_files_keep_tags_that_look_like_formulas(tmp_path):
    store = TagStore(4)
    store.add("=odd", [0, 2])
    path = store.save(tmp_path / "tags.csv")
    assert TagStore.load(path, 4).indices("=odd").tolist() == [0, 2]
