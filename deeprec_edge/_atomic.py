"""Atomic file writing: a crash mid-write never damages the previous file.

:func:`atomic_write` writes into a temporary file *in the destination's own
directory* (so the final rename never crosses a file system), flushes and
fsyncs it, renames it over the destination with :func:`os.replace` (atomic
on POSIX and Windows), then fsyncs the directory so the rename itself is
durable.  Readers see either the complete old file or the complete new one.

If anything fails -- the writer raises, the disk is full, the process is
interrupted -- the temporary file is removed and an existing destination is
left untouched.  A process killed outright (SIGKILL, power loss) cannot clean
up, so a stale ``.<name>.<random>.tmp`` file may remain next to the
destination; the destination itself is still the complete previous version.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from typing import IO, Callable, Union

__all__ = ["atomic_write"]

PathLike = Union[str, "os.PathLike[str]"]


def _current_umask() -> int:
    """The process umask, read without changing it where possible."""
    try:  # Linux >= 4.7: no race with other threads creating files
        with open("/proc/self/status", "r", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where unsupported)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _cannot_write(path: str, directory: str, exc: OSError) -> OSError:
    """A copy of ``exc`` (same class and errno) whose message names the path
    (``filename`` is left unset so the message is not repeated)."""
    why = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        msg = f"cannot write {path}: directory {directory} is not writable ({why})"
    elif exc.errno == errno.EROFS:
        msg = f"cannot write {path}: directory {directory} is on a read-only file system"
    elif exc.errno == errno.ENOENT:
        msg = f"cannot write {path}: directory {directory} does not exist"
    elif exc.errno == errno.ENOTDIR:
        msg = f"cannot write {path}: {directory} is not a directory"
    else:
        msg = f"cannot write {path}: {why}"
    return type(exc)(exc.errno, msg) if exc.errno is not None else type(exc)(msg)


def atomic_write(path: PathLike, writer_fn: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` atomically: ``writer_fn(f)`` fills a binary file object.

    The data goes to a temporary file in the same directory, which is
    flushed, fsynced and renamed over ``path`` with :func:`os.replace`; the
    directory is then fsynced.  On any error (including ``KeyboardInterrupt``)
    the temporary file is removed, ``path`` is left as it was, and the error
    propagates.  An existing file's permission bits are kept; a new file gets
    the usual ``0o666 & ~umask``.

    Raises :class:`OSError` (its subclass as raised by the system, e.g.
    :class:`PermissionError`) with a message naming ``path`` when the
    directory is missing or not writable or ``path`` is a directory.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a directory")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_current_umask()
    except OSError as e:
        raise _cannot_write(path, directory, e) from None

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise _cannot_write(path, directory, e) from None

    try:
        with os.fdopen(fd, "wb") as f:
            writer_fn(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, mode)
        except OSError:  # e.g. a file system without permission bits
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
