"""The io layer: atomic files and folders, tables; and the names that moved in issue 12."""
from __future__ import annotations

import errno
import os

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.io import atomic
from tsimcne_widgets.io.atomic import (
    atomic_folder,
    atomic_path,
    atomic_write_bytes,
    check_parent_folder,
    file_in_the_way,
    swap_in_folder,
    temporary_sibling,
)
from tsimcne_widgets.io.tables import write_table
from tsimcne_widgets.render.palette import natural_key


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


# -- files ---------------------------------------------------------------------------------
def test_atomic_write_refuses_to_clobber_then_replaces(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert _names(tmp_path) == ["out.bin"]  # no temporary file left


def test_a_file_that_appears_meanwhile_is_not_clobbered(tmp_path):
    # The final step is a hard link, which fails where the name exists, unlike a rename.
    target = tmp_path / "out.csv"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_path(target) as tmp:
            tmp.write_text("ours")
            target.write_text("someone else's")
    assert target.read_text() == "someone else's"
    assert _names(tmp_path) == ["out.csv"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "map.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder broke"):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("encoder broke")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["map.png"]


def test_errors_name_the_file_in_the_way_or_the_missing_folder(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    assert file_in_the_way(blocker / "sub" / "out.csv") == blocker
    assert file_in_the_way(tmp_path / "missing" / "out.csv") is None
    with pytest.raises(NotADirectoryError, match="notes.txt.*is a file, not a folder"):
        atomic_write_bytes(blocker / "out.csv", b"x")
    with pytest.raises(FileNotFoundError, match="create it first"):
        check_parent_folder(tmp_path / "missing" / "out.csv", "write")
    with pytest.raises(IsADirectoryError, match="give a file name"):
        atomic_write_bytes(tmp_path, b"x", overwrite=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that apply (not root)")
def test_a_read_only_folder_gives_a_hint(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="Hint: choose a folder you can write to"):
            atomic_write_bytes(locked / "out.bin", b"x")
    finally:
        locked.chmod(0o700)


def test_write_table_round_trips_and_neutralises_formulas_only_when_asked(tmp_path):
    frame = pd.DataFrame({"name": ["=1+1", "plain"], "value": [-1.5, 2.0]})
    safe = pd.read_csv(write_table(frame, tmp_path / "safe.csv"))
    assert safe["name"].tolist() == ["'=1+1", "plain"]
    assert safe["value"].tolist() == [-1.5, 2.0]
    exact = pd.read_csv(write_table(frame, tmp_path / "exact.csv", spreadsheet_safe=False))
    assert exact["name"].tolist() == ["=1+1", "plain"]


# -- folders -------------------------------------------------------------------------------
def test_atomic_folder_builds_aside_and_swaps_in(tmp_path):
    target = tmp_path / "session"
    with atomic_folder(target) as built:
        assert built.parent == tmp_path and built.name.startswith(".session.")
        (built / "a.txt").write_text("new")
        assert not target.exists()  # nothing visible until the block ends
    assert _names(target) == ["a.txt"]
    assert _names(tmp_path) == ["session"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_folder(target):
            pytest.fail("an existing folder must be refused before anything is built")
    with atomic_folder(target, overwrite=True) as built:
        (built / "b.txt").write_text("newer")
    assert _names(target) == ["b.txt"]
    assert _names(tmp_path) == ["session"]  # the old folder is gone, no trash left


def test_a_failure_while_building_keeps_the_old_folder(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_folder(target, overwrite=True) as built:
            (built / "half.txt").write_text("half")
            raise OSError(errno.ENOSPC, "disk full")
    assert _names(target) == ["old.txt"]
    assert _names(tmp_path) == ["export"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    # A rename that fails half-way through the swap cannot be provoked portably, so the
    # second rename (new folder into place) is made to fail.
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    built = temporary_sibling(target)
    (built / "new.txt").write_text("new")
    real_rename = os.rename
    calls = []

    def rename(source, destination):
        calls.append((source, destination))
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return real_rename(source, destination)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="I/O error"):
        swap_in_folder(built, target, overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 3  # old aside, new in (failed), old back
    assert _names(target) == ["old.txt"]
    assert _names(built) == ["new.txt"]  # the caller decides what to do with it


def test_swap_refuses_a_file_and_an_existing_folder_without_overwrite(tmp_path):
    built = temporary_sibling(tmp_path / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        swap_in_folder(built, tmp_path / "file", overwrite=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        swap_in_folder(built, tmp_path / "folder")
    assert built.is_dir()


# -- names that moved ----------------------------------------------------------------------
def test_the_first_import_paths_still_work():
    from tsimcne_widgets.curation.tags import TagStore
    from tsimcne_widgets.data.imageset import ImageSet
    from tsimcne_widgets.data.load import ImageSet as LoadImageSet
    from tsimcne_widgets.datasets import make_shapes

    assert LoadImageSet is ImageSet
    assert isinstance(make_shapes(12, image_size=8), ImageSet)
    assert TagStore(3).n == 3


def test_natural_key_orders_numbers_by_value_and_special_names_last():
    names = ["img10", "(missing)", "img2", "B", "a", "10", "2"]
    ordered = sorted(names, key=lambda n: natural_key(n, last=("(missing)",)))
    assert ordered == ["2", "10", "a", "B", "img2", "img10", "(missing)"]
    assert np.array_equal(sorted(["3", "20", "1"], key=natural_key), ["1", "3", "20"])
