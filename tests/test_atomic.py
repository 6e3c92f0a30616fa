"""The one atomic writer (deeprec_edge._atomic) and every file written through it.

- Every writer of the package and the trainer (models, session states,
  candidate sets npz/CSV, evaluation JSON and plot, the demo history) writes a
  uniquely named temporary file of our pattern, fsyncs it, and renames it;
  new files all get ``0o666 & ~umask``.
- Outputs that are not regular files (device, FIFO, socket) are refused and
  left alone; a symbolic link is written through; a dangling link is refused.
- SIGTERM / SIGHUP / SIGINT during a save remove the temporary file (the
  process still ends by the signal); temporary files of killed writers are
  removed by the next save.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import deeprec_edge as de
from deeprec_edge import _atomic
from deeprec_edge._atomic import NotRegularFileError, atomic_write
from helpers_model import child_env, random_model, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
POSIX = os.name == "posix"
TEMP_RE = r"\.{name}\.(\d+)\.[a-z0-9_]{{8}}\.tmp"


def listing(d):
    return sorted(os.listdir(d))


# --------------------------------------------------------------------------
# every writer goes through the one writer
# --------------------------------------------------------------------------


def _writers(tmp_path):
    """(file name, function writing it) for every kind of file we write."""
    model = random_model(seed=1)
    out = {
        "model.npz": lambda p: de.save_model(model, p),
        "session.npz": lambda p: de.Session(model).save(p),
    }
    cand = pytest.importorskip("deeprec_edge.trainer.candidates")
    ev = pytest.importorskip("deeprec_edge.trainer.evaluate")
    ids = np.asarray(model.item_ids)
    sets = cand.CandidateSets(users=np.array([0, 1]), offsets=np.array([0, 2, 3]),
                              items=np.array([1, 2, 3]), scores=np.array([0.5, 0.2, 0.9]),
                              user_ids=np.array([7, 8]), item_ids=ids)
    out["cands.npz"] = sets.to_npz
    out["cands.csv"] = sets.to_csv
    out["report.json"] = lambda p: ev.write_json({"a": 1.0, "b": float("nan")}, p)
    report = {"protocol": "sessions", "methods": {"gru": {"full": {"optimistic": {
        "recall@20": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6},
        "mrr@20": {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3}}}}}, "data": {}}
    try:
        import matplotlib  # noqa: F401
        out["plot.png"] = lambda p: ev.plot_report(report, p)
    except ImportError:
        pass
    return out


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
def test_every_writer_is_the_atomic_writer(tmp_path, monkeypatch):
    """Unique temporary name of our pattern, fsync before the rename, one
    rename, and the same mode for every new file (candidate files were 0600,
    models 0644; the JSON report used a fixed '.tmp' name and no fsync)."""
    writers = _writers(tmp_path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(
            f"/proc/self/fd/{fd}") else fd))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    old = os.umask(0o027)
    try:
        for name, write in writers.items():
            events.clear()
            p = tmp_path / name
            write(str(p))
            reps = [e for e in events if e[0] == "replace"]
            assert len(reps) == 1, (name, events)
            src = os.path.basename(reps[0][1])
            assert re.fullmatch(TEMP_RE.format(name=re.escape(name)), src), (name, src)
            assert int(re.fullmatch(TEMP_RE.format(name=re.escape(name)), src).group(1)) \
                == os.getpid()
            assert reps[0][2] == str(p)
            synced = [e[1] for e in events[:events.index(reps[0])] if e[0] == "fsync"]
            assert reps[0][1] in synced, (name, events)
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o640, (name, oct(os.stat(p).st_mode))
    finally:
        os.umask(old)
    assert listing(tmp_path) == sorted(writers)


@pytest.mark.heavy
def test_demo_history_is_written_atomically(tmp_path, monkeypatch):
    demo = pytest.importorskip("deeprec_edge.trainer.demo")
    calls = []
    real = _atomic.atomic_write

    def spy(path, fn):
        calls.append(os.path.basename(path))
        return real(path, fn)

    monkeypatch.setattr(_atomic, "atomic_write", spy)
    demo.build_demo(str(tmp_path), seed=0, log=lambda s: None)
    assert "demo_history.csv" in calls
    assert de.read_history(tmp_path / "demo_history.csv").n_rows == 240


# --------------------------------------------------------------------------
# what may be replaced
# --------------------------------------------------------------------------


def _special_files(tmp_path):
    out = {}
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        out["fifo"] = ("FIFO", stat.S_ISFIFO)
    if hasattr(socket, "AF_UNIX"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(tmp_path / "sock"))
        s.close()
        out["sock"] = ("socket", stat.S_ISSOCK)
    if POSIX and os.geteuid() == 0:
        # our own null device (never /dev/null itself: a regression would
        # replace the system's)
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        out["null"] = ("character device", stat.S_ISCHR)
    return out


def test_non_regular_outputs_are_refused_and_left_alone(tmp_path):
    specials = _special_files(tmp_path)
    if not specials:
        pytest.skip("no FIFO, socket or device node can be made here")
    model = random_model(seed=1)
    for name, (kind, is_kind) in specials.items():
        p = tmp_path / name
        with pytest.raises(NotRegularFileError, match=f"cannot write {re.escape(str(p))}: "
                                                      f"it is a {kind}"):
            de.save_model(model, p)
        assert is_kind(os.lstat(p).st_mode), f"{name} was replaced"
        link = tmp_path / f"link-to-{name}"
        os.symlink(p, link)
        with pytest.raises(NotRegularFileError):
            atomic_write(link, lambda f: f.write(b"x"))
        assert is_kind(os.lstat(p).st_mode) and os.path.islink(link)
    assert not [n for n in listing(tmp_path) if n.endswith(".tmp")]


def test_symlink_is_written_through_and_dangling_link_refused(tmp_path):
    real_dir = tmp_path / "models"
    real_dir.mkdir()
    target = real_dir / "me.npz"
    de.save_model(random_model(seed=1), target)
    os.chmod(target, 0o600)
    link = tmp_path / "current.npz"
    os.symlink(os.path.join("models", "me.npz"), link)       # relative link
    new = random_model(seed=2)
    de.save_model(new, link)
    assert os.path.islink(link) and os.readlink(link) == os.path.join("models", "me.npz")
    assert de.load_model(target).fingerprint() == new.fingerprint()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert listing(tmp_path) == ["current.npz", "models"] and listing(real_dir) == ["me.npz"]
    dangling = tmp_path / "dangling.npz"
    os.symlink(tmp_path / "nowhere" / "x.npz", dangling)
    with pytest.raises(NotRegularFileError, match="dangling"):
        de.save_model(new, dangling)
    assert os.path.islink(dangling) and not os.path.exists(tmp_path / "nowhere")


def test_check_target_errors_name_the_path(tmp_path):
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        _atomic.check_target(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _atomic.check_target(tmp_path / "no" / "x.npz")
    assert _atomic.check_target(tmp_path / "new.npz") == str(tmp_path / "new.npz")


def test_enoent_in_an_existing_directory_is_not_called_missing(tmp_path):
    """ENOENT on creating a file in a directory that exists (/proc, /sys): the
    message must not say the directory does not exist."""
    e = _atomic._cannot_write(str(tmp_path / "x.npz"), str(tmp_path),
                              FileNotFoundError(errno.ENOENT, "No such file or directory"))
    assert isinstance(e, FileNotFoundError) and e.errno == errno.ENOENT
    assert "does not exist" not in str(e) and "does not accept new files" in str(e)
    e = _atomic._cannot_write(str(tmp_path / "no" / "x.npz"), str(tmp_path / "no"),
                              FileNotFoundError(errno.ENOENT, "No such file or directory"))
    assert "directory " + str(tmp_path / "no") + " does not exist" in str(e)
    if os.path.isdir("/proc/self") and not os.path.exists("/proc/deeprec-edge-test.npz"):
        with pytest.raises(OSError) as ei:
            de.save_model(random_model(), "/proc/deeprec-edge-test.npz")
        assert "does not exist" not in str(ei.value) and "/proc" in str(ei.value)


# --------------------------------------------------------------------------
# signals during a save, and what killed writers leave behind
# --------------------------------------------------------------------------


_SLOW_SAVE = textwrap.dedent("""
    import os, signal, sys, time
    from deeprec_edge._atomic import atomic_write

    path, marker, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "dfl":                      # SIGINT with its OS default action
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if mode == "own":                      # the application's own handler: kept
        got = []
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))

    def slow(f):
        f.write(b"x" * 300_000)
        f.flush()
        os.fsync(f.fileno())
        open(marker, "w").close()          # half of the file is on disk
        for _ in range(300):
            time.sleep(0.01)
            if mode == "own" and got:
                break
        f.write(b"y" * 1000)

    atomic_write(path, slow)
    if mode == "own":
        assert got and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        print("saved", flush=True)
""")


def _fresh_signals(ignored=()):
    """A preexec_fn: the child starts with the default action for the signals
    the writer handles (as a program started from a terminal does), whatever
    the test runner inherited -- `nohup` ignores SIGHUP, a shell's background
    job SIGINT -- then ignores ``ignored``."""
    def reset():
        for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        for s in ignored:
            signal.signal(s, signal.SIG_IGN)
    return reset


def _save_and_signal(tmp_path, sig, mode="plain", ignored=()):
    p = tmp_path / "weights.npz"
    p.write_bytes(b"previous model")
    marker = tmp_path / "half"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(p), str(marker), mode],
                            env=child_env(), cwd=HERE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_fresh_signals(ignored))
    try:
        wait_for(marker.exists, 120, proc)
        temps = [n for n in listing(tmp_path) if n.startswith(".weights.npz.")]
        assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) >= 300_000
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    marker.unlink()
    return proc.returncode, out.decode(), err.decode(), p


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
@pytest.mark.parametrize("signame,mode", [("SIGTERM", "plain"), ("SIGHUP", "plain"),
                                          ("SIGINT", "plain"), ("SIGINT", "dfl")])
def test_signal_mid_save_removes_the_temporary_file(tmp_path, signame, mode):
    sig = getattr(signal, signame)
    code, out, err, p = _save_and_signal(tmp_path, sig, mode)
    # still ended by the signal (Python ends by SIGINT after an uncaught
    # KeyboardInterrupt), the previous file intact, nothing else left
    assert code == -sig, (code, err)
    assert p.read_bytes() == b"previous model"
    assert listing(tmp_path) == ["weights.npz"], listing(tmp_path)


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_a_signal_the_program_ignores_stays_ignored(tmp_path):
    """Under `nohup` SIGHUP is ignored: the writer must not make it fatal --
    the save completes and the new file replaces the old one."""
    code, out, err, p = _save_and_signal(tmp_path, signal.SIGHUP, "plain",
                                         ignored=(signal.SIGHUP,))
    assert code == 0, err
    assert p.read_bytes() == b"x" * 300_000 + b"y" * 1000
    assert listing(tmp_path) == ["weights.npz"]


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_application_signal_handler_is_kept(tmp_path):
    code, out, err, p = _save_and_signal(tmp_path, signal.SIGTERM, "own")
    assert code == 0 and out.strip() == "saved", err
    assert p.read_bytes() == b"x" * 300_000 + b"y" * 1000
    assert listing(tmp_path) == ["weights.npz"]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(not POSIX, reason="POSIX pids")
def test_next_save_removes_stale_temporaries_of_ours_only(tmp_path):
    p = tmp_path / "weights.npz"
    dead, live = _dead_pid(), os.getppid()
    names = {
        f".weights.npz.{dead}.abcd1234.tmp": False,       # writer gone: removed
        f".weights.npz.{live}.abcd1234.tmp": True,        # writer may still run: kept
        f".weights.npz.{live}.old_1234.tmp": False,       # ... unless older than a day
        f".other.npz.{dead}.abcd1234.tmp": True,          # another file's
        ".weights.npz.notours.tmp": True,                 # not our pattern
        "weights.npz.backup": True,
    }
    for n in names:
        (tmp_path / n).write_bytes(b"partial")
    old = time.time() - _atomic.STALE_SECONDS - 60
    os.utime(tmp_path / f".weights.npz.{live}.old_1234.tmp", (old, old))
    os.mkdir(tmp_path / f".weights.npz.{dead}.dir12345.tmp")  # not a regular file: kept
    de.save_model(random_model(seed=1), p)
    want = sorted([n for n, keep in names.items() if keep]
                  + ["weights.npz", f".weights.npz.{dead}.dir12345.tmp"])
    assert listing(tmp_path) == want


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_leftover_is_removed_by_the_next_save(tmp_path):
    code, out, err, p = _save_and_signal(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert len(listing(tmp_path)) == 2              # the killed writer's temporary file
    atomic_write(p, lambda f: f.write(b"next"))
    assert listing(tmp_path) == ["weights.npz"] and p.read_bytes() == b"next"


def test_writer_error_and_interrupt_leave_nothing(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"old")
    for exc in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        def fail(f, exc=exc):
            f.write(b"partial")
            raise exc
        with pytest.raises(type(exc)):
            atomic_write(p, fail)
        assert listing(tmp_path) == ["x.bin"] and p.read_bytes() == b"old"
    assert json.loads(json.dumps(listing(tmp_path))) == ["x.bin"]


def test_a_path_ending_in_a_separator_is_refused_before_any_work(tmp_path):
    """``out/`` names a directory: refused by the up-front check (commands run
    it before long work), whether or not the directory exists."""
    for p in (str(tmp_path / "missing") + os.sep, str(tmp_path) + os.sep):
        with pytest.raises(IsADirectoryError, match="names a directory"):
            _atomic.check_target(p)
        with pytest.raises(IsADirectoryError):
            atomic_write(p, lambda f: f.write(b"x"))
    assert not os.path.exists(tmp_path / "missing")


def test_an_empty_path_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    """abspath("") is the working folder: the temporary file went to its parent,
    then the rename to "" failed."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(FileNotFoundError, match="the file name is empty"):
        de.save_model(random_model(), "")
    assert listing(tmp_path) == ["work"] and listing(work) == []


def test_a_failed_write_names_the_file(tmp_path):
    """Disk full (ENOSPC) while writing: the error says which file; the old file
    is intact and no temporary file is left."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def full(f):
        f.write(b"new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as e:
        atomic_write(target, full)
    assert e.value.errno == errno.ENOSPC and f"cannot write {target}" in str(e.value)
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["out.bin"]


def test_an_error_about_another_file_is_not_blamed_on_the_output(tmp_path):
    """The writer may read other files (a font, an input): their OSError keeps
    its own file name."""
    def reads(f):
        open(tmp_path / "missing-font.ttf", "rb")

    with pytest.raises(FileNotFoundError) as e:
        atomic_write(tmp_path / "out.png", reads)
    assert "missing-font.ttf" in str(e.value) and "cannot write" not in str(e.value)
    assert listing(tmp_path) == []


def test_a_read_only_file_system_is_called_so(tmp_path, monkeypatch):
    """os.access fails on a read-only file system too: the message said
    'not writable (Permission denied)'."""
    class RO:
        f_flag = os.ST_RDONLY
    monkeypatch.setattr(_atomic.os, "access", lambda *a, **k: False)
    monkeypatch.setattr(_atomic.os, "statvfs", lambda d: RO())
    with pytest.raises(OSError) as e:
        _atomic.check_target(tmp_path / "x.npz")
    assert e.value.errno == errno.EROFS and "read-only file system" in str(e.value)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_probe_target_fails_where_no_file_can_be_created(tmp_path):
    """/proc passes the permission checks (as root) but takes no new file:
    the probe fails up front (commands call it before long work) and leaves
    nothing behind where it succeeds."""
    with pytest.raises(OSError) as e:
        _atomic.probe_target("/proc/deeprec-edge-probe.npz")
    assert "/proc" in str(e.value) and "does not exist" not in str(e.value)
    assert _atomic.probe_target(tmp_path / "ok.npz") == str(tmp_path / "ok.npz")
    assert listing(tmp_path) == []
