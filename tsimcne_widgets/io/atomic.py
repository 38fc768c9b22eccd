"""The one implementation of atomic writes: a crash never leaves half a file or folder.

* A file is written to a temporary name in its destination folder, flushed with
  ``fsync`` and moved into place with ``os.replace`` -- or with a hard link when an
  existing file must not be clobbered, because a link fails where the name exists
  while a rename would silently replace a file that appeared meanwhile
  (:func:`atomic_path`, :func:`atomic_write_bytes`).
* A folder is built in a temporary sibling and renamed into place; an old folder is
  moved aside first and put back if the rename fails (:func:`atomic_folder`, or
  :func:`temporary_sibling` + :func:`swap_in_folder` when the caller decides late
  whether to swap).
* Errors name the path and what to do: a file standing where a folder should be
  (:func:`file_in_the_way`, :func:`check_parent_folder`), a missing folder, no
  permission, a full disk (:func:`explain_os_error`).

Standard library only; nothing from the rest of the package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_folder",
    "temporary_sibling",
    "swap_in_folder",
    "check_parent_folder",
    "file_in_the_way",
    "explain_os_error",
    "fsync_file",
    "fsync_folder",
]


def fsync_file(path: str | os.PathLike) -> None:
    """Flush the file at ``path`` to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_folder(path: str | os.PathLike) -> None:
    """Flush folder ``path`` so that a rename inside it survives a power cut (best effort).

    Windows cannot open a folder for ``fsync``; there the rename is as durable as the
    filesystem makes it.
    """
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder, else None.

    A regular file there means no folder can be created on the way to ``path``: the
    fix is another location, not ``os.makedirs``.
    """
    for ancestor in Path(path).parents:
        if ancestor.exists() or ancestor.is_symlink():
            return None if ancestor.is_dir() else ancestor
    return None


def check_parent_folder(path: str | os.PathLike, action: str) -> None:
    """Refuse a ``path`` whose folder is missing, naming the file in the way if any.

    Parameters
    ----------
    path : str or os.PathLike
        The file or folder about to be written.
    action : str
        What the caller is doing, for the message (``"write"``, ``"save to"`` ...).

    Raises
    ------
    NotADirectoryError
        A regular file stands where a parent folder should be; the message names it.
    FileNotFoundError
        The parent folder does not exist.
    """
    path = Path(path)
    if path.parent.is_dir():
        return
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot {action} {str(path)!r}: {str(blocker)!r} is a file, not a "
            "folder. Hint: choose a location inside a folder, or move that file away")
    raise FileNotFoundError(
        errno.ENOENT, f"cannot {action} {str(path)!r}: {str(path.parent)!r} is not an existing "
        "folder. Hint: create it first (os.makedirs)")


def explain_os_error(exc: OSError, path: str | os.PathLike, action: str) -> OSError:
    """A new error of the same kind as ``exc`` whose message names ``path`` and a fix.

    Parameters
    ----------
    exc : OSError
        The error raised by the operating system.
    path : str or os.PathLike
        What was being written.
    action : str
        What the caller was doing (``"write"``, ``"export to"`` ...).

    Returns
    -------
    OSError
        Raise it ``from exc``.
    """
    path = Path(path)
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


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"{str(path)!r} already exists; pass overwrite=True to "
                           "replace it or choose another name")


def _check_file_destination(path: Path, overwrite: bool) -> None:
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"{str(path)!r} is a folder; give a file name")
        if not overwrite:
            raise _exists_error(path)
    check_parent_folder(path, "write")


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

    Yields
    ------
    pathlib.Path
        An empty file to write to (by name: reopen it, or hand it to a library).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        If ``path`` is a folder.
    OSError
        (or a subclass such as PermissionError) naming the path and a hint, when the
        location cannot be written. The temporary file is always removed on failure.
    """
    path = Path(path)
    _check_file_destination(path, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise explain_os_error(exc, path, "write") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_file(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _exists_error(path) from None
            except OSError:
                # Filesystems without hard links (FAT, some network shares).
                if path.exists():
                    raise _exists_error(path) from None
                os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and str(path) in str(exc):
            raise
        raise explain_os_error(exc, path, "write") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def temporary_sibling(folder: str | os.PathLike, action: str = "write") -> Path:
    """A new empty hidden folder next to ``folder``, to build it in before the swap.

    Being on the same filesystem as ``folder`` is what makes :func:`swap_in_folder` a
    rename rather than a copy.

    Raises
    ------
    OSError
        The parent folder is missing or not writable; the message names a fix.
    """
    folder = Path(folder)
    check_parent_folder(folder, action)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as exc:
        raise explain_os_error(exc, folder, action) from exc


def swap_in_folder(built: str | os.PathLike, folder: str | os.PathLike,
                   overwrite: bool = False) -> Path:
    """Rename the finished folder ``built`` to ``folder``.

    An existing ``folder`` is moved aside first and deleted only once ``built`` is in
    place; if that rename fails, the old folder is put back.

    Parameters
    ----------
    built : str or os.PathLike
        The complete new folder, on the same filesystem (see :func:`temporary_sibling`).
    folder : str or os.PathLike
        Its final name.
    overwrite : bool, default False
        Replace an existing ``folder``.

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    FileExistsError
        ``folder`` exists (or appeared meanwhile) and ``overwrite`` is False.
    NotADirectoryError
        ``folder`` exists and is a file.
    """
    built, folder = Path(built), Path(folder)
    if not (folder.exists() or folder.is_symlink()):
        try:
            os.rename(built, folder)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(errno.EEXIST, f"{str(folder)!r} appeared while it was "
                                      "being written; pass overwrite=True to replace it or "
                                      "choose another name") from exc
            raise
    elif not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{str(folder)!r} exists and is a file; "
                                 "choose a folder name")
    elif not overwrite:
        raise FileExistsError(errno.EEXIST, f"{str(folder)!r} already exists; pass "
                              "overwrite=True to replace it or choose another name")
    else:
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                      dir=folder.parent))
        old = trash / "old"
        os.rename(folder, old)
        try:
            os.rename(built, folder)
        except BaseException:
            os.rename(old, folder)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    fsync_folder(folder.parent)
    return folder


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, overwrite: bool = False,
                  action: str = "write") -> Iterator[Path]:
    """Yield an empty sibling folder to fill; swap it in as ``folder`` when the block succeeds.

    On any error in the block (or in the swap) the half-built folder is deleted and an
    existing ``folder`` is left as it was.

    Parameters
    ----------
    folder : str or os.PathLike
        Final folder name; its parent must exist.
    overwrite : bool, default False
        Replace an existing ``folder``. Without it an existing folder is refused before
        anything is built.
    action : str
        What the caller is doing, for error messages.

    Yields
    ------
    pathlib.Path
        The folder to build in.

    Raises
    ------
    FileExistsError
        ``folder`` exists and ``overwrite`` is False.
    OSError
        The location cannot be written; the message names the path and a fix.
    """
    folder = Path(folder)
    if (folder.exists() or folder.is_symlink()) and not overwrite:
        raise FileExistsError(errno.EEXIST, f"cannot {action} {str(folder)!r}: it already "
                              "exists; pass overwrite=True to replace it or choose another name")
    built = temporary_sibling(folder, action)
    try:
        yield built
        swap_in_folder(built, folder, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
