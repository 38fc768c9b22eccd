"""Tables and image folders: exact contents, refusal to clobber, and atomicity on failure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tsimcne_widgets.curation import export
from tsimcne_widgets.curation.export import MANIFEST_NAME, export_files, selection_frame
from tsimcne_widgets.curation.subset import make_subset
from tsimcne_widgets.curation.tags import TagStore
from tsimcne_widgets.data.imageset import ImageSet
from tsimcne_widgets.io.tables import write_table

N = 12


@pytest.fixture
def collection(tmp_path, image_writer):
    """12 images: the even ones have a real source file (PNG or JPEG), the odd ones don't."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(N, 8, 8, 3), dtype=np.uint8)
    source_dir = tmp_path / "sources"
    paths: list[str | None] = []
    for i in range(N):
        if i % 2 == 0:
            suffix = ".png" if i % 4 == 0 else ".jpg"
            paths.append(str(image_writer(source_dir / f"img{i:02d}{suffix}", seed=i)))
        else:
            paths.append(None)
    labels = np.array(["cat", "dog", "bird/../x"] * 4, dtype=object)
    tags = TagStore(N)
    tags.add("keep", [0, 1, 2, 3])
    tags.add("blurry", [2, 5, 6])
    return images, paths, labels, tags


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- selection_frame and write_table -------------------------------------------------------
def test_selection_frame_columns_and_values(collection):
    images, paths, labels, tags = collection
    xy = np.arange(2 * N, dtype=float).reshape(N, 2)
    meta = pd.DataFrame({"camera": [f"c{i}" for i in range(N)], "label": range(N)})
    frame = selection_frame([5, 2, 2, 11], xy, labels, paths, meta, tags)
    assert list(frame.columns) == ["index", "x", "y", "label", "path", "camera",
                                   "metadata_label", "tags"]
    assert frame["index"].tolist() == [2, 5, 11]
    assert frame["x"].tolist() == [4.0, 10.0, 22.0]
    assert frame["y"].tolist() == [5.0, 11.0, 23.0]
    assert frame["label"].tolist() == [labels[2], labels[5], labels[11]]
    assert frame["path"].tolist() == [paths[2], None, None]
    assert frame["camera"].tolist() == ["c2", "c5", "c11"]
    assert frame["metadata_label"].tolist() == [2, 5, 11]
    assert frame["tags"].tolist() == ["keep;blurry", "blurry", ""]


def test_selection_frame_without_map_or_extras():
    frame = selection_frame(np.array([True, False, True]), n=3)
    assert frame["index"].tolist() == [0, 2]
    assert frame[["x", "y"]].isna().all().all()
    assert frame["tags"].tolist() == ["", ""]
    with pytest.raises(ValueError, match="disagree"):
        selection_frame([0], xy=np.zeros((3, 2)), labels=["a", "b"])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        selection_frame([3], n=3)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_write_table_round_trip(tmp_path, collection, suffix):
    images, paths, labels, tags = collection
    frame = selection_frame([0, 3, 7], np.random.default_rng(0).normal(size=(N, 2)), labels,
                            paths, None, tags)
    out = write_table(frame, tmp_path / f"sel{suffix}")
    assert _listing(tmp_path) == sorted(["sources", f"sel{suffix}"])
    back = {".csv": lambda p: pd.read_csv(p, keep_default_na=False, na_values={"path": [""]}),
            ".parquet": pd.read_parquet,
            ".jsonl": lambda p: pd.read_json(p, lines=True)}[suffix](out)
    assert back["index"].tolist() == [0, 3, 7]
    np.testing.assert_allclose(back["x"], frame["x"])
    assert back["label"].tolist() == frame["label"].tolist()
    assert back["tags"].tolist() == ["keep", "keep", ""]
    assert back["path"].iloc[0] == paths[0] and pd.isna(back["path"].iloc[1])


def test_write_table_refuses_existing_then_overwrites(tmp_path):
    target = tmp_path / "t.csv"
    write_table(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_table(pd.DataFrame({"a": [2]}), target)
    assert pd.read_csv(target)["a"].tolist() == [1]
    write_table(pd.DataFrame({"a": [3]}), target, overwrite=True)
    assert pd.read_csv(target)["a"].tolist() == [3]
    assert _listing(tmp_path) == ["t.csv"]


def test_write_table_format_choice(tmp_path):
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "data.txt", format="jsonl")
    assert (tmp_path / "data.txt").read_text().strip() == '{"a":1}'
    with pytest.raises(ValueError, match="suffix"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "data.xlsx")


def test_unwritable_location_leaves_nothing(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    target = blocker / "out.csv"  # fails for every user, root included
    with pytest.raises(OSError, match="file.txt") as info:
        write_table(pd.DataFrame({"a": [1]}), target)
    assert "Hint" in str(info.value)
    assert _listing(tmp_path) == ["file.txt"] and blocker.read_text() == "not a folder"


def test_read_only_folder_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("running as root: chmod does not block writes here")
        with pytest.raises(PermissionError, match="Hint"):
            write_table(pd.DataFrame({"a": [1]}), locked / "out.csv")
        assert _listing(locked) == []
    finally:
        locked.chmod(0o700)


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.parquet"
    write_table(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()
    unserialisable = pd.DataFrame({"a": [1, "two", 3.0 + 1j]})  # pyarrow cannot type this
    with pytest.raises(Exception):
        write_table(unserialisable, target, overwrite=True)
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["t.parquet"]


# -- export_files --------------------------------------------------------------------------
def _check_exported_file(out: Path, row: pd.Series, images, paths) -> None:
    exported = out / row["exported_path"]
    index = int(row["index"])
    if paths[index] is not None:
        assert exported.read_bytes() == Path(paths[index]).read_bytes()
        assert exported.name == f"{index}_{Path(paths[index]).name}"
        assert row["source_path"] == paths[index]
    else:
        np.testing.assert_array_equal(np.asarray(Image.open(exported)), images[index])
        assert exported.name == f"{index}.png"
        assert pd.isna(row["source_path"])


def test_export_by_tag_matches_selection_exactly(tmp_path, collection):
    images, paths, labels, tags = collection
    selection = [0, 2, 3, 5, 8, 9]
    out = tmp_path / "export"
    report = export_files(out, selection, images, paths, labels, tags)
    expected_rows = {(0, "keep"), (2, "keep"), (2, "blurry"), (3, "keep"), (5, "blurry"),
                     (8, ""), (9, "")}
    manifest = pd.read_csv(out / MANIFEST_NAME, keep_default_na=False,
                           na_values={"source_path": [""]})
    assert {(int(i), t) for i, t in zip(manifest["index"], manifest["tag"])} == expected_rows
    assert report.n_files == len(expected_rows) == len(manifest)
    expected_files = {f"{t or 'untagged'}/{name}" for i, t in expected_rows
                      for name in [f"{i}_{Path(paths[i]).name}" if paths[i] else f"{i}.png"]}
    assert _tree(out) == expected_files | {MANIFEST_NAME}
    assert set(manifest["exported_path"]) == expected_files
    for _, row in manifest.iterrows():
        _check_exported_file(out, row, images, paths)
        assert row["label"] == labels[int(row["index"])]
    assert _listing(tmp_path) == ["export", "sources"]  # no temp sibling left


def test_export_per_label_without_tags(tmp_path, collection):
    images, paths, labels, _ = collection
    out = tmp_path / "by_label"
    export_files(out, [0, 1, 2], images, paths, labels, tags=TagStore(N))
    # The label "bird/../x" becomes a safe folder name instead of escaping the export.
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert folders == {"cat", "dog", "bird___x"}
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert not (tmp_path / "x").exists()
    export_files(tmp_path / "plain", [1, 3], images)
    assert _tree(tmp_path / "plain") == {"untagged/1.png", "untagged/3.png", MANIFEST_NAME}


def test_export_link_mode(tmp_path, collection):
    images, paths, labels, tags = collection
    out = tmp_path / "links"
    export_files(out, [0, 1], images, paths, labels, tags, mode="link")
    linked = out / "keep" / f"0_{Path(paths[0]).name}"
    assert linked.is_symlink() and linked.resolve() == Path(paths[0]).resolve()
    assert not (out / "keep" / "1.png").is_symlink()  # no source file: written as PNG
    np.testing.assert_array_equal(np.asarray(Image.open(out / "keep" / "1.png")), images[1])


def test_existing_folder_refused_overwrite_and_merge(tmp_path, collection):
    images, paths, labels, tags = collection
    out = tmp_path / "export"
    export_files(out, [0, 1], images, paths, labels, tags)
    first = _tree(out)
    with pytest.raises(FileExistsError, match="overwrite=True.*merge=True"):
        export_files(out, [8], images, paths, labels, tags)
    assert _tree(out) == first

    export_files(out, [8, 9], images, paths, labels, tags, merge=True)
    merged = _tree(out)
    assert merged == first | {f"untagged/8_{Path(paths[8]).name}", "untagged/9.png"}
    manifest = pd.read_csv(out / MANIFEST_NAME)
    assert sorted(manifest["index"]) == [0, 1, 8, 9]
    assert set(manifest["exported_path"]) == merged - {MANIFEST_NAME}

    export_files(out, [5], images, paths, labels, tags, overwrite=True)
    assert _tree(out) == {"blurry/5.png", MANIFEST_NAME}
    assert pd.read_csv(out / MANIFEST_NAME)["index"].tolist() == [5]
    assert _listing(tmp_path) == ["export", "sources"]

    empty = tmp_path / "empty_dir"
    empty.mkdir()
    export_files(empty, [1], images)  # an existing empty folder is fine
    assert _tree(empty) == {"untagged/1.png", MANIFEST_NAME}


def test_injected_failure_mid_export_leaves_nothing(tmp_path, collection, monkeypatch):
    images, paths, labels, tags = collection
    copied = []
    real_copy = export._copy_one

    def flaky_copy(source, destination):
        if len(copied) == 2:
            raise OSError(28, "No space left on device")
        real_copy(source, destination)
        copied.append(destination)

    monkeypatch.setattr(export, "_copy_one", flaky_copy)
    out = tmp_path / "export"
    with pytest.raises(OSError, match="export.*No space left.*Hint"):
        export_files(out, [0, 2, 4, 6, 8], images, paths, labels, tags)
    assert len(copied) == 2
    assert _listing(tmp_path) == ["sources"]  # neither the export nor a temp folder

    monkeypatch.setattr(export, "_copy_one", real_copy)
    export_files(out, [1], images, paths, labels, tags)
    previous = {p: (out / p).read_bytes() for p in _tree(out)}
    copied.clear()
    monkeypatch.setattr(export, "_copy_one", flaky_copy)
    with pytest.raises(OSError):
        export_files(out, [0, 2, 4, 6], images, paths, labels, tags, overwrite=True)
    assert {p: (out / p).read_bytes() for p in _tree(out)} == previous
    assert _listing(tmp_path) == ["export", "sources"]


def test_export_input_errors(tmp_path, collection):
    images, paths, labels, tags = collection
    with pytest.raises(ValueError, match="nothing selected"):
        export_files(tmp_path / "e", [], images, paths, labels, tags)
    with pytest.raises(ValueError, match="nothing selected"):
        export_files(tmp_path / "e", np.zeros(N, bool), images, paths, labels, tags)
    with pytest.raises(ValueError, match="mode"):
        export_files(tmp_path / "e", [0], images, mode="move")
    with pytest.raises(ValueError, match="either"):
        export_files(tmp_path / "e", [0], images, overwrite=True, merge=True)
    with pytest.raises(ValueError, match="no readable source file"):
        export_files(tmp_path / "e", [1], None, paths)
    with pytest.raises(FileNotFoundError, match="create it first"):
        export_files(tmp_path / "missing" / "e", [0], images)
    assert _listing(tmp_path) == ["sources"]


def test_tag_names_cannot_escape_the_folder(tmp_path, collection):
    images, paths, labels, _ = collection
    tags = TagStore(N)
    tags.add("fine", [0])
    tags._tags["../escaped"] = np.array([1], dtype=np.int64)  # bypass add()'s validation
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ValueError, match="invalid tag name"):
        export_files(work / "out", [0, 1], images, paths, labels, tags)
    assert _listing(work) == [] and not (tmp_path / "escaped").exists()


def test_empty_tags_are_flagged(tmp_path, collection):
    images, paths, labels, tags = collection
    tags.add("nothing yet")
    with pytest.warns(UserWarning, match="'nothing yet' is empty"):
        report = export_files(tmp_path / "out", [0], images, paths, labels, tags)
    assert any("blurry" in w and "no image in the selection" in w for w in report.warnings)
    assert not (tmp_path / "out" / "nothing yet").exists()


# -- torch ---------------------------------------------------------------------------------
def test_make_subset_from_imageset(collection):
    torch = pytest.importorskip("torch")
    images, paths, labels, _ = collection
    image_set = ImageSet(images=images, labels=labels)
    subset = make_subset(image_set, [7, 2, 2, 10])
    assert len(subset) == 3
    classes = sorted(set(labels))
    for position, index in enumerate([2, 7, 10]):
        tensor, target = subset[position]
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 8, 8)
        expected = torch.from_numpy(images[index].transpose(2, 0, 1).astype(np.float32) / 255)
        assert torch.allclose(tensor, expected)
        assert classes[target] == labels[index]
    batch, targets = next(iter(torch.utils.data.DataLoader(subset, batch_size=3)))
    assert tuple(batch.shape) == (3, 3, 8, 8) and targets.tolist() == [
        classes.index(labels[i]) for i in (2, 7, 10)]


def test_make_subset_from_dataset():
    pytest.importorskip("torch")
    dataset = [(f"item{i}", i % 3) for i in range(6)]
    subset = make_subset(dataset, [4, 1])
    assert [subset[k] for k in range(len(subset))] == [("item1", 1), ("item4", 1)]
    with pytest.raises(ValueError, match=r"0\.\.5"):
        make_subset(dataset, [6])
    with pytest.raises(TypeError, match="ImageSet or a dataset"):
        make_subset(42, [0])


def test_modules_import_without_torch_or_bokeh():
    code = ("import sys, tsimcne_widgets.curation.selection, tsimcne_widgets.curation.export, "
            "tsimcne_widgets.curation.subset, tsimcne_widgets.render.html; "
            "bad = [m for m in ('torch', 'bokeh') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ})
    assert result.returncode == 0, result.stderr
