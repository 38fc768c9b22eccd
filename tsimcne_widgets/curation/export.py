"""Everything that writes the user's curation to disk, atomically.

Files are written to a temporary name in the destination folder, flushed with ``fsync``
and moved into place with ``os.replace`` (or a hard link when an existing file must not be
clobbered). Folders are built in a temporary sibling folder and renamed into place. On any
error the temporary file or folder is removed and a clear error is raised, so a crash never
leaves a half-written table or a half-filled export folder.

No torch at import time: :func:`make_subset` imports it when called.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .selection import TagStore, _as_indices, validate_tag_name

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "check_parent_folder",
    "file_in_the_way",
    "neutralise_formulas",
    "FORMULA_PREFIXES",
    "selection_frame",
    "write_table",
    "table_format",
    "export_files",
    "ExportReport",
    "ImageSetDataset",
    "make_subset",
    "UNTAGGED_FOLDER",
    "MANIFEST_NAME",
]

UNTAGGED_FOLDER = "untagged"
MANIFEST_NAME = "manifest.csv"
_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
                   ".jsonl": "jsonl", ".ndjson": "jsonl"}
# RFC 4180 line ends: Python's csv module quotes a cell holding a line-end character only
# when that character is in the line terminator, so with "\n" alone a label holding a
# bare "\r" was written unquoted and split its row in two for every reader.
_CSV_LINE_END = "\r\n"
#: A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# -- atomic primitives ---------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows), so best-effort.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(exc: OSError, path: Path, action: str) -> OSError:
    """A new error of the same kind whose message names the path and a fix."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a folder you can write to, or fix its permissions"
    elif isinstance(exc, (NotADirectoryError, FileNotFoundError)) or exc.errno in (
            errno.ENOTDIR, errno.ENOENT):
        blocker = file_in_the_way(path)
        hint = (f"{str(blocker)!r} is a file, not a folder; choose a location inside a folder"
                if blocker is not None else
                "the folder must exist and be a directory; create it first (os.makedirs)")
    elif exc.errno == errno.ENOSPC:
        hint = "the disk is full; free space or choose another location"
    else:
        hint = "check the path"
    message = f"cannot {action} {str(path)!r}: {exc.strerror or exc}. Hint: {hint}"
    return type(exc)(message) if exc.errno is None else type(exc)(exc.errno, message)


def _check_destination(path: Path, overwrite: bool) -> None:
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"{str(path)!r} is a folder; give a file name")
        if not overwrite:
            raise FileExistsError(
                errno.EEXIST,
                f"{str(path)!r} already exists; pass overwrite=True to replace it "
                "or choose another name",
            )
    check_parent_folder(path, "write")


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder, else None.

    A regular file there means no folder can be created on the way to ``path``: the
    fix is another location, not ``os.makedirs``.
    """
    for ancestor in Path(path).parents:
        if ancestor.exists() or ancestor.is_symlink():
            return None if ancestor.is_dir() else ancestor
    return None


def check_parent_folder(path: Path, action: str) -> None:
    """Refuse a ``path`` whose folder is missing, naming the file in the way if any."""
    parent = path.parent
    if parent.is_dir():
        return
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot {action} {str(path)!r}: {str(blocker)!r} is a file, not a "
            "folder. Hint: choose a location inside a folder, or move that file away")
    raise FileNotFoundError(
        errno.ENOENT, f"cannot {action} {str(path)!r}: {str(parent)!r} is not an existing "
        "folder. Hint: create it first (os.makedirs)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name. Its folder must exist.
    overwrite : bool, default False
        Replace an existing file. Without it the final move cannot clobber a file that
        appeared meanwhile (a hard link is used where the filesystem supports it).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    OSError
        (or a subclass such as PermissionError) naming the path and a hint, when the
        location cannot be written. The temporary file is always removed on failure.
    """
    path = Path(path)
    _check_destination(path, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _os_error(exc, path, "write") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no clobbering in a race
            except FileExistsError:
                raise FileExistsError(
                    errno.EEXIST, f"{str(path)!r} already exists; pass overwrite=True to "
                    "replace it or choose another name") from None
            except OSError:
                # Filesystems without hard links (FAT, some network shares).
                if path.exists():
                    raise FileExistsError(errno.EEXIST, f"{str(path)!r} already exists; pass "
                                          "overwrite=True to replace it") from None
                os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and str(path) in str(exc):
            raise
        raise _os_error(exc, path, "write") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


# -- tables --------------------------------------------------------------------------------
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
    idx = _as_indices(indices, total)
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


def table_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``"csv"``, ``"parquet"`` or ``"jsonl"`` from ``format`` or the file suffix."""
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"pq": "parquet", "ndjson": "jsonl"}.get(fmt, fmt)
        if fmt not in ("csv", "parquet", "jsonl"):
            raise ValueError(f"format must be 'csv', 'parquet' or 'jsonl', got {format!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise ValueError(f"cannot tell the table format of {Path(path).name!r}: use a .csv, "
                         ".parquet or .jsonl suffix, or pass format=")
    return _TABLE_SUFFIXES[suffix]


def _is_formula(value: object) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_PREFIXES)


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells a spreadsheet cannot run as formulas.

    A text cell (or column name) starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return gets a leading single quote, as OWASP recommends against CSV
    injection: Excel, LibreOffice and Google Sheets then show the text instead of
    evaluating e.g. ``=HYPERLINK(...)``.  Numeric, boolean and date columns, and numbers
    inside mixed columns, are left alone, so ``-1.5`` stays a number.

    Parameters
    ----------
    df : pandas.DataFrame

    Returns
    -------
    pandas.DataFrame
        A new frame; ``df`` is not modified.
    """
    out = df.copy(deep=False)
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
                or pd.api.types.is_datetime64_any_dtype(column)
                or isinstance(column.dtype, pd.PeriodDtype)
                or pd.api.types.is_timedelta64_dtype(column)):
            continue
        values = column.astype(object)
        risky = values.map(_is_formula).to_numpy(dtype=bool)
        if risky.any():
            values = values.copy()
            values[risky] = ["'" + v for v in values[risky]]
            out.isetitem(position, values)
    out.columns = ["'" + c if _is_formula(c) else c for c in out.columns]
    return out


def write_table(df: pd.DataFrame, path: str | os.PathLike, format: str | None = None,
                overwrite: bool = False, spreadsheet_safe: bool = True) -> Path:
    """Write ``df`` as CSV, Parquet or JSON Lines, atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        The table (e.g. from :func:`selection_frame`); its index is not written.
    path : str or os.PathLike
        Destination file; its folder must exist.
    format : {"csv", "parquet", "jsonl"}, optional
        Default: from the suffix (``.csv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``).
    overwrite : bool, default False
        Replace an existing file.
    spreadsheet_safe : bool, default True
        CSV only: text cells that a spreadsheet would run as a formula get a leading
        single quote (see :func:`neutralise_formulas`).  Pass False for a CSV that a
        program reads back and whose text must stay exact.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is False.
    PermissionError, OSError
        If the location cannot be written; the message names the path and a fix.
        No partial file is left behind.
    """
    path = Path(path)
    fmt = table_format(path, format)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("writing Parquet needs pyarrow: pip install pyarrow "
                              "(or write .csv / .jsonl instead)") from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        if fmt == "csv":
            (neutralise_formulas(df) if spreadsheet_safe else df).to_csv(
                tmp, index=False, lineterminator=_CSV_LINE_END)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    return path


# -- files ---------------------------------------------------------------------------------
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
    idx = _as_indices(indices, total)
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
    parent = folder.parent
    check_parent_folder(folder, "export to")
    rows, notes = _plan(idx, labels, tags)
    label_arr = None if labels is None else np.asarray(labels, dtype=object)

    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise _os_error(exc, folder, "export to") from exc
    try:
        manifest = _fill(tmp, rows, image_arr, paths, label_arr, mode)
        if merge and non_empty:
            manifest = _merge_into(tmp, folder, manifest)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _write_manifest(tmp / MANIFEST_NAME, manifest)
            _swap_in(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _os_error(exc, folder, "export to") from exc
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
    manifest.to_csv(path, index=False, lineterminator=_CSV_LINE_END)
    _fsync_file(path)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` to ``folder``, replacing an old one only at the end."""
    if not folder.exists():
        os.rename(tmp, folder)
    else:
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                      dir=folder.parent))
        old = trash / "old"
        os.rename(folder, old)
        try:
            os.rename(tmp, folder)
        except BaseException:
            os.rename(old, folder)  # put the previous export back
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    _fsync_dir(folder.parent)


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
    _fsync_dir(folder)
    return manifest


# -- torch ---------------------------------------------------------------------------------
class ImageSetDataset:
    """A map-style dataset over uint8 images: item ``i`` is ``(CHW float tensor, target)``.

    Duck-typed (``__len__``/``__getitem__``), so it works with ``torch.utils.data``
    without importing torch at module load. Pixels are scaled to [0, 1]. ``target`` is
    the position of the image's label in :attr:`classes` (sorted label names), or -1
    without labels, following torchvision's ImageFolder.
    """

    def __init__(self, images: np.ndarray, labels: Sequence | None = None) -> None:
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
        self.images = arr
        if labels is None:
            self.classes: list[str] = []
            self.targets = np.full(arr.shape[0], -1, dtype=np.int64)
        else:
            label_arr = np.asarray(labels, dtype=object)
            if label_arr.shape[0] != arr.shape[0]:
                raise ValueError(f"{label_arr.shape[0]} labels for {arr.shape[0]} images")
            self.classes = sorted({str(x) for x in label_arr})
            lookup = {c: k for k, c in enumerate(self.classes)}
            self.targets = np.array([lookup[str(x)] for x in label_arr], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        import torch

        # Copy: ImageSet arrays are read-only and torch.from_numpy warns on those.
        chw = np.ascontiguousarray(self.images[i].transpose(2, 0, 1))
        return torch.from_numpy(chw.copy()).float().div_(255.0), int(self.targets[i])


def make_subset(dataset_or_imageset: object, indices: object):
    """A ``torch.utils.data.Subset`` of the selected images, ready for a DataLoader.

    Parameters
    ----------
    dataset_or_imageset : ImageSet or map-style dataset
        An :class:`~tsimcne_widgets.data.load.ImageSet` (or anything with a uint8 ``images``
        array and ``labels``) is wrapped in :class:`ImageSetDataset`; any object with
        ``__len__`` and ``__getitem__`` (e.g. a torchvision dataset) is used as is.
    indices : array-like of int or bool mask
        The selection (sorted, de-duplicated).

    Returns
    -------
    torch.utils.data.Subset
    """
    from torch.utils.data import Subset

    source = dataset_or_imageset
    images = getattr(source, "images", None)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        dataset = ImageSetDataset(images, getattr(source, "labels", None))
    elif hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        dataset = source
    else:
        raise TypeError(f"make_subset needs an ImageSet or a dataset with __len__ and "
                        f"__getitem__, got {type(source).__name__}")
    idx = _as_indices(indices, len(dataset))
    return Subset(dataset, idx.tolist())
