"""The one way in and out of a results folder: every read, write, lock, listing and removal of results, masks,
models, checkpoints, plots and tables goes through here.

Guarantees (each is tested in ``tests/test_store_gate.py``):

- a path is taken relative to its root and must stay inside it (``..`` or an absolute part leading out is
  refused), and every component below the root is opened with ``O_NOFOLLOW`` through directory descriptors
  (``dir_fd=``), so a symbolic link anywhere below the root is refused, never followed;
- only regular files are read: a file is opened with ``O_NONBLOCK`` (a FIFO or a device never blocks) and
  ``fstat``-checked before a byte is read; reads are bounded (a file above the bound is refused unread);
- writes are atomic: a temporary file created exclusively (``O_EXCL | O_NOFOLLOW``) in the target's folder,
  fsynced, then renamed over the target (a rename replaces a link itself, never writes through it);
- locks are regular files created inside the root, opened without following links;
- a listing of results counts only regular, non-hidden ``*.json`` files outside hidden folders.

Files from outside a results folder (a checkpoint given to ``evaluate``, a dense checkpoint) are *inputs*:
the user names them, so links are followed, but they too must be regular files and are read bounded.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from benchmark.errors import StoreError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK = 1 << 20


def parts_inside(root: Path | str, path: Path | str) -> tuple[str, ...]:
    """The components of ``path`` below ``root`` (lexically, both made absolute from the working directory, as
    every path of a results folder is built: ``root / ...``); refused if it leads out."""
    base = os.path.abspath(root)
    target = os.path.abspath(path)
    rel = os.path.relpath(target, base)
    if rel == ".":
        return ()
    parts = tuple(Path(rel).parts)
    if parts[0] == ".." or "\x00" in rel:
        raise StoreError(f"refusing {path}: it lies outside the results folder {base}; check the names in the "
                         "suite and the path given")
    return parts


def _kind(dir_fd: int, name: str) -> str:
    """What ``name`` in the folder ``dir_fd`` is, without following it: 'link', 'folder', 'file', 'other' or
    'missing'."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "folder"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _refusal(path: Path | str, dir_fd: int, name: str, e: OSError, wanted: str) -> StoreError:
    kind = _kind(dir_fd, name)
    if kind == "link":
        return StoreError(f"refusing {path}: {name!r} is a symbolic link (links inside a results folder are never "
                          "followed); replace it with a real folder or file")
    if kind == "missing":
        return StoreError(f"{path}: no such {wanted}")
    if kind != wanted and not (wanted == "file" and kind == "other"):
        return StoreError(f"refusing {path}: {name!r} is a {kind}, not a {wanted}; remove or rename it")
    return StoreError(f"{path}: {e.strerror or e}")


def _open_root(root: Path | str, create: bool) -> int:
    try:
        if create:
            os.makedirs(root, exist_ok=True)
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StoreError(f"results folder {root} does not exist") from None
    except OSError as e:
        raise StoreError(f"results folder {root}: {e.strerror or e}") from None


@contextmanager
def folder(root: Path | str, parts: tuple[str, ...], *, create: bool = False, path: Path | str = "") -> Iterator[int]:
    """A descriptor of the folder ``root/parts...``, each component opened with ``O_NOFOLLOW`` (created with
    ``create``); closed on exit."""
    fd = _open_root(root, create)
    try:
        for name in parts:
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise StoreError(f"cannot create {path or name} ({e.strerror or e}); free space or choose a "
                                     "writable folder, then run again") from None
            try:
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise _refusal(path or name, fd, name, e, "folder") from None
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _checked_reader(fd: int, path: Path | str, limit: int | None) -> BinaryIO:
    """A buffered reader of the open descriptor ``fd`` once it is known to be a regular file within ``limit``."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"refusing {path}: not a regular file (a FIFO, device or socket); remove it")
        if limit is not None and st.st_size > limit:
            raise StoreError(f"refusing {path}: {st.st_size} bytes, more than such a file may have ({limit}); "
                             "delete it and re-create it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_read(root: Path | str, path: Path | str, *, limit: int | None = None) -> Iterator[BinaryIO]:
    """``root/path`` opened for reading: inside the root, no link followed, a regular file of at most ``limit``
    bytes."""
    parts = parts_inside(root, path)
    if not parts:
        raise StoreError(f"{path}: a folder, not a file")
    with folder(root, parts[:-1], path=path) as dfd:
        try:
            fd = os.open(parts[-1], READ_FLAGS, dir_fd=dfd)
        except OSError as e:
            raise _refusal(path, dfd, parts[-1], e, "file") from None
        f = _checked_reader(fd, path, limit)
    with f:
        yield f


def _read_all(f: BinaryIO, path: Path | str, limit: int | None) -> bytes:
    data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:  # it grew after the check
        raise StoreError(f"refusing {path}: more than {limit} bytes; delete it and re-create it")
    return data


def read_bytes(root: Path | str, path: Path | str, *, limit: int) -> bytes:
    """The bytes of ``root/path`` (see :func:`open_read`)."""
    with open_read(root, path, limit=limit) as f:
        return _read_all(f, path, limit)


def sha256_of(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def file_sha256(root: Path | str, path: Path | str) -> str:
    """The sha256 (hex) of ``root/path``, read through the gate."""
    with open_read(root, path) as f:
        return sha256_of(f)


def kind(root: Path | str, path: Path | str) -> str:
    """'file', 'folder', 'link', 'other' or 'missing' for ``root/path``, following no link (a link in a folder
    above it counts as 'link')."""
    parts = parts_inside(root, path)
    if not parts:
        return "folder" if os.path.isdir(root) else "missing"
    try:
        with folder(root, parts[:-1], path=path) as dfd:
            return _kind(dfd, parts[-1])
    except StoreError as e:
        return "link" if "symbolic link" in str(e) else "missing"


def is_file(root: Path | str, path: Path | str) -> bool:
    """Whether ``root/path`` is a regular file reached without a link."""
    return kind(root, path) == "file"


def write_error(e: OSError, path: Path | str) -> StoreError:
    return StoreError(f"cannot write {path} ({e.strerror or e}); free space or choose a writable folder, then "
                      "run again")


def write_bytes(root: Path | str, path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``root/path`` atomically (folders created, no link followed, the old file intact if the
    write fails)."""
    parts = parts_inside(root, path)
    if not parts:
        raise StoreError(f"{path}: a folder, not a file")
    name = parts[-1]
    with folder(root, parts[:-1], create=True, path=path) as dfd:
        if _kind(dfd, name) == "folder":
            raise StoreError(f"refusing {path}: {name!r} is a folder, not a file; remove or rename it")
        tmp = f".{name[:100]}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
        except OSError as e:
            raise write_error(e, path) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as e:
            _unlink(dfd, tmp)
            raise write_error(e, path) from None
        except BaseException:
            _unlink(dfd, tmp)
            raise


def write_text(root: Path | str, path: Path | str, text: str) -> None:
    write_bytes(root, path, text.encode("utf-8"))


def _unlink(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def make_folder(root: Path | str, path: Path | str | None = None) -> None:
    """Create the folder ``path`` inside ``root`` (default: ``root`` itself) and its parents (no link followed)."""
    path = root if path is None else path
    with folder(root, parts_inside(root, path), create=True, path=path):
        pass


def private_folder(path: Path | str) -> Path:
    """The folder ``path``, created (with its parents) readable and writable by this user alone, and refused unless
    it is a real folder (not a link) owned by this user that no one else may read, write or enter: a place for
    files this user's processes trust, such as submitit's job pickles."""
    path = Path(os.path.abspath(path))
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StoreError(f"cannot create the private folder {path} ({e.strerror or e}); choose a writable one") \
            from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"refusing {path}: a symbolic link or not a folder; remove it and run again")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise StoreError(f"refusing {path}: others may enter it (owner uid {st.st_uid}, mode "
                         f"{stat.S_IMODE(st.st_mode):o}); make it yours alone: chmod 700 {path}")
    return path


def remove(root: Path | str, path: Path | str) -> None:
    """Remove the file (or link, itself) ``root/path`` if it is there."""
    parts = parts_inside(root, path)
    if not parts:
        raise StoreError(f"refusing to remove the results folder {root} itself")
    try:
        with folder(root, parts[:-1], path=path) as dfd:
            if _kind(dfd, parts[-1]) == "folder":
                raise StoreError(f"refusing to remove {path}: a folder where a file was expected")
            _unlink(dfd, parts[-1])
    except StoreError as e:
        if "no such" not in str(e):
            raise


def remove_tree(root: Path | str, path: Path | str) -> None:
    """Remove the folder ``root/path`` and everything in it (links inside are removed, never followed)."""
    parts = parts_inside(root, path)
    if not parts:
        raise StoreError(f"refusing to remove the results folder {root} itself")
    try:
        with folder(root, parts[:-1], path=path) as dfd:
            kind_ = _kind(dfd, parts[-1])
            if kind_ == "folder":
                _remove_tree_at(dfd, parts[-1])
            elif kind_ != "missing":
                _unlink(dfd, parts[-1])
    except StoreError as e:
        if "no such" not in str(e):
            raise


def _remove_tree_at(dfd: int, name: str) -> None:
    fd = os.open(name, DIR_FLAGS, dir_fd=dfd)
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _remove_tree_at(fd, entry.name)
            else:
                _unlink(fd, entry.name)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def list_files(root: Path | str, path: Path | str | None = None, *, suffixes: tuple[str, ...] = (),
               recursive: bool = False) -> list[Path]:
    """Regular, non-hidden files in ``root/path`` (with ``recursive``, in its non-hidden subfolders too) whose
    names end with one of ``suffixes``, as paths under ``root``, sorted. Links are neither followed nor
    listed; a missing folder lists nothing."""
    path = root if path is None else path
    base = parts_inside(root, path)
    found: list[Path] = []
    try:
        with folder(root, base, path=path) as fd:
            _scan(fd, Path(root).joinpath(*base), suffixes, recursive, found, 0)
    except StoreError as e:
        if "no such" not in str(e):
            raise
    return sorted(found)


def _scan(fd: int, where: Path, suffixes: tuple[str, ...], recursive: bool, found: list[Path], depth: int) -> None:
    for entry in os.scandir(fd):
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            if recursive and depth < 16:
                try:
                    sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    _scan(sub, where / entry.name, suffixes, recursive, found, depth + 1)
                finally:
                    os.close(sub)
        elif entry.is_file(follow_symlinks=False) and (not suffixes or entry.name.endswith(suffixes)):
            found.append(where / entry.name)


def result_files(root: Path | str) -> list[Path]:
    """Every result file under ``root``: regular, non-hidden ``*.json`` files outside hidden folders, reached
    without a link."""
    return list_files(root, suffixes=(".json",), recursive=True)


@contextmanager
def lock(root: Path | str, path: Path | str, *, wait: bool, note: str = "") -> Iterator[bool]:
    """An exclusive ``flock`` on the regular file ``root/path`` (created inside the root, never through a link;
    released by the OS if the process dies). Yields whether it was taken; with ``wait=False`` it never blocks.
    The holder writes ``note`` into it."""
    parts = parts_inside(root, path)
    if not parts:
        raise StoreError(f"{path}: a folder, not a lock file")
    with folder(root, parts[:-1], create=True, path=path) as dfd:
        try:
            fd = os.open(parts[-1], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
        except OSError as e:
            raise _refusal(path, dfd, parts[-1], e, "file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"refusing lock {path}: not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        if note:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_note(root: Path | str, path: Path | str, limit: int = 4096) -> str:
    """What the holder of the lock ``root/path`` wrote into it ('' if it cannot be read)."""
    try:
        return read_bytes(root, path, limit=limit).decode("utf-8", "replace").strip()
    except StoreError:
        return ""


@contextmanager
def open_input(path: Path | str, *, limit: int | None = None, what: str = "file") -> Iterator[BinaryIO]:
    """A file from outside a results folder (named by the user, so links are followed), opened without blocking,
    refused unless it is a regular file of at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StoreError(f"{what} {path} does not exist; check the path") from None
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise StoreError(f"{what} {path} is a folder, not a file; give the file") from None
        raise StoreError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    f = _checked_reader(fd, path, limit)
    with f:
        yield f


def read_input_bytes(path: Path | str, *, limit: int, what: str = "file") -> bytes:
    with open_input(path, limit=limit, what=what) as f:
        return _read_all(f, path, limit)


def input_sha256(path: Path | str, what: str = "file") -> str:
    with open_input(path, what=what) as f:
        return sha256_of(f)


def buffer(data: bytes) -> BinaryIO:
    """``data`` as a seekable binary stream (for readers that want a file)."""
    return io.BytesIO(data)
