"""Atomic file writing: the one writer of every file deeprec-edge writes.

:func:`atomic_write` writes into a temporary file *in the destination's own
directory* (so the final rename never crosses a file system), flushes and
fsyncs it, gives it its final permission bits, renames it over the
destination with :func:`os.replace` (atomic on POSIX and Windows), then
fsyncs the directory so the rename itself is durable.  Readers see either
the complete old file or the complete new one.  Models, session states,
candidate sets and the trainer's reports all go through here.

What it writes to, and what it refuses (a careful Unix tool's rules):

- a regular file (replaced; its permission bits are kept) or a new name
  (created with ``0o666 & ~umask``, as :func:`open` would);
- a symbolic link is written *through*: the file it points to is replaced
  atomically, the link stays.  A dangling link is refused (nothing is
  created at a place the caller did not name);
- anything else -- a directory, a device (``/dev/null``), a FIFO, a
  socket -- is refused with :class:`NotRegularFileError` and left alone:
  replacing ``-o /dev/null`` with a regular file, as root, would break the
  system.

Temporary files are named ``.<name>.<pid>.<random>.tmp``.  If anything fails
-- the writer raises, the disk is full, ``KeyboardInterrupt`` -- the
temporary file is removed and the destination is left untouched.  SIGTERM,
SIGHUP and SIGINT whose action is the default one (terminate) would kill the
process without that cleanup: while a write runs in the main thread, they
remove the temporary file first and then terminate the process by the same
signal (the exit status a shell sees is unchanged).  Handlers the
application installed itself are never replaced.  A process killed outright
(SIGKILL, power loss), or a write in another thread cut short by a signal,
cannot clean up: the next write to the same destination removes such stale
files -- ours by their name, left by a process that no longer runs (or older
than :data:`STALE_SECONDS`).
"""
from __future__ import annotations

import errno
import os
import re
import signal
import stat
import tempfile
import threading
import time
from typing import IO, Callable, Dict, Optional, Set, Tuple, Union

__all__ = ["atomic_write", "check_target", "remove_stale_temporaries", "NotRegularFileError",
           "STALE_SECONDS"]

PathLike = Union[str, "os.PathLike[str]"]

#: A temporary file of ours older than this is stale even if a process with
#: the pid in its name runs (pids are reused; no save takes a day).
STALE_SECONDS = 24 * 3600.0
# Keep temporary names within NAME_MAX (255) whatever the destination's name.
_MAX_BASE = 200
# Signals whose default action (terminate) would leave a temporary file.
_CLEANUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT")
                         if hasattr(signal, n))

# Temporary files being written, by any thread.  Only add/discard/tuple()
# touch it: single operations on a set, atomic for Python threads, so the
# signal handler can read it without a lock (a lock it might already hold).
_live: Set[str] = set()


class NotRegularFileError(OSError):
    """The destination exists and is not a regular file (a device, FIFO,
    socket, ...), or is a dangling symbolic link: it is never replaced."""


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
    elif exc.errno == errno.ENOENT and not os.path.isdir(directory):
        msg = f"cannot write {path}: directory {directory} does not exist"
    elif exc.errno == errno.ENOENT:     # e.g. /proc: the directory takes no new files
        msg = f"cannot write {path}: directory {directory} does not accept new files ({why})"
    elif exc.errno == errno.ENOTDIR:
        msg = f"cannot write {path}: {directory} is not a directory"
    else:
        msg = f"cannot write {path}: {why}"
    return type(exc)(exc.errno, msg) if exc.errno is not None else type(exc)(msg)


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def check_target(path: PathLike) -> str:
    """The file :func:`atomic_write` would replace for ``path`` (the target
    of a symbolic link, else ``path``), after the checks it makes first.

    Raises :class:`IsADirectoryError`, :class:`NotRegularFileError` (a
    device, FIFO, socket or dangling link) or the :class:`OSError` of a
    missing or unwritable directory, each naming ``path``; writes nothing.
    Commands call it before long work, so a bad output fails at once.
    """
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not p:
        # abspath("") is the working folder: the write would land in its parent
        raise FileNotFoundError(errno.ENOENT, "cannot write '': the file name is empty")
    if p.endswith(os.sep) or (os.altsep is not None and p.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {p}: a path ending in "
                                              f"{p[-1]!r} names a directory; give a file name")
    target = p
    if os.path.islink(p):
        target = os.path.realpath(p)
        if not os.path.lexists(target) or os.path.islink(target):
            raise NotRegularFileError(errno.ENOENT, f"cannot write {p}: it is a symbolic link "
                                                    f"to {target}, which does not exist "
                                                    f"(refusing to write through a dangling "
                                                    f"link)")
    directory = os.path.dirname(os.path.abspath(target))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _cannot_write(p, directory, e) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"cannot write {p}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            raise NotRegularFileError(errno.EEXIST, f"cannot write {p}: it is {kind}, not a "
                                                    f"regular file; deeprec-edge replaces only "
                                                    f"regular files")
    if not os.path.isdir(directory):
        code = errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT
        raise _cannot_write(p, directory, OSError(code, os.strerror(code)))
    if os.name == "posix" and not os.access(directory, os.W_OK | os.X_OK):
        code = errno.EACCES
        try:
            if os.statvfs(directory).f_flag & os.ST_RDONLY:
                code = errno.EROFS
        except (OSError, AttributeError):
            pass
        err = OSError if code == errno.EROFS else PermissionError
        raise _cannot_write(p, directory, err(code, os.strerror(code)))
    return target


def _new_temporary(p: str, target: str, directory: str) -> Tuple[int, str]:
    """A new temporary file for ``target`` in ``directory`` (fd, path); the
    OSError names ``p``."""
    try:
        return tempfile.mkstemp(prefix=f"{_temp_prefix(target)}{os.getpid()}.",
                                suffix=".tmp", dir=directory)
    except OSError as e:
        raise _cannot_write(p, directory, e) from None


def probe_target(path: PathLike) -> str:
    """:func:`check_target`, then create and remove a temporary file where
    :func:`atomic_write` would: a directory that passes the permission
    checks but takes no new files (``/sys``, ``/proc``, an exhausted quota of files) fails
    here, before long work, and not after a command wrote its other
    outputs.  Returns the target; leaves nothing behind."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    target = check_target(p)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = _new_temporary(p, target, directory)
    os.close(fd)
    _unlink_quietly(tmp)
    return target


def _temp_prefix(target: str) -> str:
    return f".{os.path.basename(target)[:_MAX_BASE]}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process (or not a pid at all)
    except OSError:
        return True
    return True


def remove_stale_temporaries(target: str) -> int:
    """Remove the temporary files that earlier writes of ``target`` left
    behind (``.<name>.<pid>.<random>.tmp``, regular files of this user,
    whose writer no longer runs or that are older than
    :data:`STALE_SECONDS`).  Returns how many were removed; never raises."""
    directory = os.path.dirname(os.path.abspath(target)) or "."
    prefix = _temp_prefix(target)
    ours = re.compile(re.escape(prefix) + r"(\d+)\.[a-z0-9_]{8}\.tmp\Z")
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    live = set(_live)
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = ours.match(entry.name)
        if m is None or entry.path in live:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (hasattr(os, "geteuid")
                                                and st.st_uid != os.geteuid()):
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or not _pid_alive(pid) or now - st.st_mtime > STALE_SECONDS:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _cleanup_and_die(signum: int, frame: object) -> None:
    """Our handler of a terminating signal whose action was the default:
    remove every temporary file being written, then terminate the process
    by the same signal with its default action (as if we had not been
    here).  Nothing is raised into the writer, so no exception can escape
    a write half-way through the cleanup."""
    for tmp in tuple(_live):
        _unlink_quietly(tmp)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup_handlers() -> Dict[int, object]:
    """In the main thread, take over the terminating signals whose action is
    the default one; returns {signum: previous handler} to restore."""
    taken: Dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return taken
    for signum in _CLEANUP_SIGNALS:
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _cleanup_and_die)
                taken[signum] = signal.SIG_DFL
        except (OSError, ValueError, RuntimeError):
            continue
    return taken


def _restore_handlers(taken: Dict[int, object]) -> None:
    for signum, handler in taken.items():
        try:
            signal.signal(signum, handler)  # type: ignore[arg-type]
        except (OSError, ValueError, RuntimeError):
            pass


def atomic_write(path: PathLike, writer_fn: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` atomically: ``writer_fn(f)`` fills a binary file object.

    The data goes to a temporary file in the destination's directory, which
    is flushed, fsynced, given its final mode and renamed over the
    destination; the directory is then fsynced.  On any error (including
    ``KeyboardInterrupt``) the temporary file is removed, the destination is
    left as it was, and the error propagates.  An existing file's permission
    bits are kept; a new file gets ``0o666 & ~umask``.  A symbolic link is
    written through (its target is replaced); see the module docstring for
    what is refused (:func:`check_target`) and for signals.

    Raises :class:`OSError` (its subclass as raised by the system, e.g.
    :class:`PermissionError`, or :class:`NotRegularFileError`) with a
    message naming ``path``.
    """
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    target = check_target(p)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_current_umask()
    except OSError as e:
        raise _cannot_write(p, directory, e) from None
    remove_stale_temporaries(target)

    taken = _install_cleanup_handlers()
    tmp: Optional[str] = None
    try:
        fd, tmp = _new_temporary(p, target, directory)
        _live.add(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                writer_fn(f)
                f.flush()
                os.fsync(f.fileno())
                try:
                    os.fchmod(f.fileno(), mode)
                except (OSError, AttributeError):  # no permission bits here (or no fchmod)
                    pass
            os.replace(tmp, target)
        except OSError as e:
            other = e.filename is not None and os.fspath(e.filename) not in (tmp, target)
            if e.errno is None or isinstance(e, NotRegularFileError) or other:
                raise       # not about this file (e.g. the writer read another one)
            # e.g. ENOSPC, EDQUOT, EIO: say which file could not be written
            raise type(e)(e.errno, f"cannot write {p}: {e.strerror or e}") from None
    except BaseException:
        if tmp is not None:
            _unlink_quietly(tmp)
        raise
    finally:
        if tmp is not None:
            _live.discard(tmp)
        _restore_handlers(taken)
    _fsync_dir(directory)
