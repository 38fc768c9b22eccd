"""Everything that writes the user's curation to disk: selection tables and image folders.

An export folder is built in a temporary sibling folder and renamed into place
(:mod:`tsimcne_widgets.io.atomic`); on any error the temporary folder is removed and a
clear error is raised, so a crash never leaves a half-filled export folder.  Tables go
through :func:`tsimcne_widgets.io.tables.write_table`.  A selection as a torch dataset is
:func:`tsimcne_widgets.curation.subset.make_subset`.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsimcne_widgets.io.atomic import (
    check_parent_folder,
    explain_os_error,
    fsync_folder,
    swap_in_folder,
    temporary_sibling,
)
from tsimcne_widgets.io.tables import write_table

from .base import as_indices
from .tags import TagStore, validate_tag_name

__all__ = [
    "selection_frame",
    "export_files",
    "ExportReport",
    "UNTAGGED_FOLDER",
    "MANIFEST_NAME",
]

UNTAGGED_FOLDER = "untagged"
MANIFEST_NAME = "manifest.csv"


def _length_of(*things: object) -> int | None:
    sizes = {len(t) for t in things if t is not None}
    if len(sizes) > 1:
        raise ValueError(f"xy, labels, paths, metadata and tags disagree on the number of "
                         f"images: {sorted(sizes)}")
    return sizes.pop() if sizes else None


def selection_frame(indices: object, xy: object | None = None, labels: Sequence | None = None,
                    paths: Sequence[str] | None = None, metadata: pd.DataFrame | None = None,
                    tags: TagStore | None = None, n: int | None = None) -> pd.DataFrame:
    """One row per selected image: ``index, x, y, label, path, <metadata...>, tags``.

    Parameters
    ----------
    indices : array-like of int or bool mask
        The selection (sorted and de-duplicated in the table).
    xy : array-like, shape (N, 2), optional
        The current map; ``x``/``y`` are NaN when there is no map yet.
    labels, paths : sequence, optional
        Per image; the columns hold missing values when not given.
    metadata : pandas.DataFrame, optional
        N rows, one per image, in image order. A column whose name clashes with a fixed
        column is prefixed with ``metadata_``.
    tags : TagStore, optional
        The ``tags`` column joins each image's tag names with ``;`` (tag names cannot
        contain ``;``); empty string when untagged.
    n : int, optional
        Number of images, needed only when none of the per-image inputs is given.

    Returns
    -------
    pandas.DataFrame
    """
    xy_arr = None if xy is None else np.asarray(xy, dtype=np.float64)
    if xy_arr is not None and (xy_arr.ndim != 2 or xy_arr.shape[1] != 2):
        raise ValueError(f"xy must have shape (N, 2), got {xy_arr.shape}")
    total = _length_of(xy_arr, labels, paths, metadata, None if tags is None else range(tags.n),
                       None if n is None else range(n))
    if total is None:
        raise ValueError("cannot tell the number of images: pass n= or one of xy, labels, "
                         "paths, metadata, tags")
    idx = as_indices(indices, total)
    frame = pd.DataFrame({"index": idx})
    frame["x"] = xy_arr[idx, 0] if xy_arr is not None else np.full(idx.size, np.nan)
    frame["y"] = xy_arr[idx, 1] if xy_arr is not None else np.full(idx.size, np.nan)
    frame["label"] = (pd.Series(np.asarray(labels, dtype=object)[idx], dtype=object)
                      if labels is not None else pd.Series([None] * idx.size, dtype=object))
    frame["path"] = (pd.Series(np.asarray(paths, dtype=object)[idx], dtype=object)
                     if paths is not None else pd.Series([None] * idx.size, dtype=object))
    if metadata is not None:
        meta = metadata.iloc[idx].reset_index(drop=True)
        fixed = {"index", "x", "y", "label", "path", "tags"}
        meta.columns = [f"metadata_{c}" if str(c) in fixed else str(c) for c in meta.columns]
        frame = pd.concat([frame, meta], axis=1)
    if tags is not None:
        frame["tags"] = [";".join(t) for t in tags.tags_of(idx)]
    else:
        frame["tags"] = ""
    return frame


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_files` wrote.

    Attributes
    ----------
    folder : pathlib.Path
        The export folder.
    n_files : int
        Image files written by this call (an image in two tags counts twice).
    manifest : pandas.DataFrame
        Rows written by this call: ``index, tag, label, source_path, exported_path``.
    warnings : tuple of str
        E.g. tags that are empty or have nothing in the selection.
    """

    folder: Path
    n_files: int
    manifest: pd.DataFrame
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"exported {self.n_files} file(s) to {self.folder}"]
        lines += [f"note: {w}" for w in self.warnings]
        return "\n".join(lines)


def _safe_folder_name(label: object) -> str:
    """A label turned into a folder name that stays inside the export folder."""
    text = str(label)
    try:
        return validate_tag_name(text)
    except ValueError:
        cleaned = "".join(c if (c.isalnum() or c in " _-.+()[],@#=&!~'") else "_" for c in text)
        cleaned = cleaned.replace("..", "_").strip(" ").lstrip(".")[:64] or "_"
        try:
            return validate_tag_name(cleaned)
        except ValueError:
            return "_" + cleaned[:63]


def _copy_one(source: Path, destination: Path) -> None:
    """Copy one image file (a module-level function so tests can inject failures)."""
    shutil.copyfile(source, destination)


def _link_one(source: Path, destination: Path) -> None:
    try:
        os.symlink(source.resolve(), destination)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create a symbolic link {str(destination)!r}: "
                      f"{exc.strerror}. Hint: use mode='copy'") from exc


def _write_png(image: np.ndarray, destination: Path) -> None:
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    Image.fromarray(np.ascontiguousarray(arr)).save(destination, format="PNG")


def _inside(child: Path, root: Path) -> bool:
    try:
        child.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _plan(idx: np.ndarray, labels: Sequence | None, tags: TagStore | None
          ) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(index, tag, folder) rows for the export, plus notes about empty tags."""
    notes: list[str] = []
    rows: list[tuple[int, str, str]] = []
    tag_names = tags.names if tags is not None else ()
    if tag_names:
        for name in tag_names:
            validate_tag_name(name)
        if MANIFEST_NAME.lower() in {t.lower() for t in tag_names}:
            raise ValueError(f"a tag named {MANIFEST_NAME!r} would collide with the manifest "
                             "file; rename the tag")
        lowered: dict[str, str] = {}
        for name in tag_names:
            if name.lower() in lowered:
                raise ValueError(f"tags {lowered[name.lower()]!r} and {name!r} differ only in "
                                 "case and would share a folder on macOS/Windows; rename one")
            lowered[name.lower()] = name
        per_image = tags.tags_of(idx)
        for i, image_tags in zip(idx.tolist(), per_image):
            if image_tags:
                rows.extend((i, t, t) for t in image_tags)
            else:
                rows.append((i, "", UNTAGGED_FOLDER))
        used = {r[1] for r in rows}
        for name in tag_names:
            if tags.indices(name).size == 0:
                notes.append(f"tag {name!r} is empty; no folder written for it")
            elif name not in used:
                notes.append(f"tag {name!r} has no image in the selection; no folder written")
    elif labels is not None:
        label_arr = np.asarray(labels, dtype=object)
        rows = [(i, "", _safe_folder_name(label_arr[i])) for i in idx.tolist()]
    else:
        rows = [(i, "", UNTAGGED_FOLDER) for i in idx.tolist()]
    return rows, notes


def export_files(folder: str | os.PathLike, indices: object, images: np.ndarray | None = None,
                 paths: Sequence[str] | None = None, labels: Sequence | None = None,
                 tags: TagStore | None = None, mode: str = "copy", overwrite: bool = False,
                 merge: bool = False) -> ExportReport:
    """Write the selected images into an ImageFolder layout plus ``manifest.csv``.

    Layout: one sub-folder per tag; a selected image in several tags goes into each of
    their folders, and one in no tag into ``untagged/``. When there are no tags at all,
    images go into one sub-folder per label (labels are cleaned into safe folder names), or
    ``untagged/`` without labels. File names are ``<index>_<original name>`` when the image
    has a readable source file (copied as is, or linked with ``mode="link"``), else
    ``<index>.png`` encoded from ``images``.

    ``manifest.csv`` has one row per written file: ``index, tag, label, source_path,
    exported_path`` (relative to ``folder``, with ``/``; ``tag`` empty for untagged).

    Parameters
    ----------
    folder : str or os.PathLike
        Destination folder; its parent must exist.
    indices : array-like of int or bool mask
        The selection.
    images : numpy.ndarray, optional
        uint8 ``(N, H, W, 3)``; needed for images without a source file.
    paths : sequence of str, optional
        Source file of each image.
    labels : sequence, optional
        Label of each image (manifest column; folders when there are no tags).
    tags : TagStore, optional
        Tags deciding the folders.
    mode : {"copy", "link"}
        Copy source files, or symlink them (images without a source file are written as
        PNG either way).
    overwrite : bool, default False
        Replace an existing non-empty folder (swapped in only once the new one is complete).
    merge : bool, default False
        Add to an existing export: the files are built aside, then moved in (same names
        are replaced) and the manifest rows appended.

    Returns
    -------
    ExportReport

    Raises
    ------
    ValueError
        Nothing selected, bad mode, both ``overwrite`` and ``merge``, or an invalid tag name.
    FileExistsError
        ``folder`` exists and is not empty, without ``overwrite`` or ``merge``.
    OSError
        Writing failed; the partial export is removed and nothing in ``folder`` changed
        (with ``merge``, only the final per-file moves can be interrupted).
    """
    if mode not in ("copy", "link"):
        raise ValueError(f"mode must be 'copy' or 'link', got {mode!r}")
    if overwrite and merge:
        raise ValueError("pass either overwrite=True or merge=True, not both")
    image_arr = None if images is None else np.asarray(images)
    total = _length_of(image_arr, paths, labels, None if tags is None else range(tags.n))
    if total is None:
        raise ValueError("export_files needs images or paths to export")
    idx = as_indices(indices, total)
    if idx.size == 0:
        raise ValueError("nothing selected: select some images before exporting")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{str(folder)!r} exists and is a file; "
                                 "choose a folder name")
    non_empty = folder.is_dir() and any(folder.iterdir())
    if non_empty and not (overwrite or merge):
        raise FileExistsError(errno.EEXIST, f"{str(folder)!r} exists and is not empty; pass "
                              "overwrite=True to replace it or merge=True to add to it")
    check_parent_folder(folder, "export to")
    rows, notes = _plan(idx, labels, tags)
    label_arr = None if labels is None else np.asarray(labels, dtype=object)

    tmp = temporary_sibling(folder, "export to")
    try:
        manifest = _fill(tmp, rows, image_arr, paths, label_arr, mode)
        if merge and non_empty:
            manifest = _merge_into(tmp, folder, manifest)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _write_manifest(tmp / MANIFEST_NAME, manifest)
            # A non-empty folder was refused above unless overwrite=True; an empty one
            # is simply replaced.
            swap_in_folder(tmp, folder, overwrite=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise explain_os_error(exc, folder, "export to") from exc
        raise
    # Only empty tags warn: a tag with nothing in this selection is the normal case when
    # exporting part of the data, and is just noted in the report.
    for note in notes:
        if " is empty" in note:
            warnings.warn(note, UserWarning, stacklevel=2)
    return ExportReport(folder=folder, n_files=len(rows), manifest=manifest,
                        warnings=tuple(notes))


def _fill(tmp: Path, rows: list[tuple[int, str, str]], images: np.ndarray | None,
          paths: Sequence[str] | None, labels: np.ndarray | None, mode: str) -> pd.DataFrame:
    records = []
    for index, tag, sub in rows:
        sub_dir = tmp / sub
        if not _inside(sub_dir, tmp) or sub_dir.resolve() == tmp.resolve():
            raise ValueError(f"folder name {sub!r} would leave the export folder")
        sub_dir.mkdir(exist_ok=True)
        source = Path(paths[index]) if paths is not None and paths[index] else None
        if source is not None and source.is_file():
            name = f"{index}_{source.name}"
        else:
            source = None
            name = f"{index}.png"
        destination = sub_dir / name
        if not _inside(destination, sub_dir):
            raise ValueError(f"file name {name!r} would leave the export folder")
        if source is None:
            if images is None:
                raise ValueError(f"image {index} has no readable source file "
                                 f"({paths[index] if paths is not None else 'no paths'!r}) "
                                 "and no pixels were given; pass images=")
            _write_png(images[index], destination)
        elif mode == "link":
            _link_one(source, destination)
        else:
            _copy_one(source, destination)
        records.append({
            "index": index,
            "tag": tag,
            "label": None if labels is None else labels[index],
            "source_path": None if source is None else str(source),
            "exported_path": f"{sub}/{name}",
        })
    return pd.DataFrame.from_records(
        records, columns=["index", "tag", "label", "source_path", "exported_path"])


def _write_manifest(path: Path, manifest: pd.DataFrame) -> None:
    # Read back by merge=True, so the text stays exact (no spreadsheet quoting).
    write_table(manifest, path, format="csv", overwrite=True, spreadsheet_safe=False)


def _merge_into(tmp: Path, folder: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """Move the built files into ``folder`` and append to its manifest."""
    old_manifest_path = folder / MANIFEST_NAME
    if old_manifest_path.is_file():
        old = pd.read_csv(old_manifest_path, dtype={"tag": str, "exported_path": str},
                          keep_default_na=False)
        combined = pd.concat([old, manifest.fillna("")], ignore_index=True)
        combined = combined.drop_duplicates(subset="exported_path", keep="last")
    else:
        combined = manifest
    # The manifest is replaced last: an interrupted merge can leave extra files that the
    # old manifest does not list, but never a manifest listing files that are missing.
    _write_manifest(tmp / MANIFEST_NAME, combined)
    for rel in manifest["exported_path"]:
        destination = folder / rel
        if not _inside(destination, folder):
            raise ValueError(f"{rel!r} would leave the export folder")
        destination.parent.mkdir(exist_ok=True)
        os.replace(tmp / rel, destination)
    os.replace(tmp / MANIFEST_NAME, old_manifest_path)
    fsync_folder(folder)
    return manifest
