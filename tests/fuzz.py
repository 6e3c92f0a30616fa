"""Fuzz harness: the kernel binding and every file reader, on hostile input.

Usage (from anywhere; it imports the *installed* deeprec_edge)::

    python tests/fuzz.py --calls 1000000 --jobs 2          # the long run
    python tests/fuzz.py --calls 3000 --seed 1             # what CI runs (tests/test_fuzz.py)
    python tests/fuzz.py --replay model:1234 --seed 1      # one case again, in-process

Targets (``--targets``, default all): ``binding`` (every function of
``deeprec_edge.kernels`` with spoilt arrays -- wrong dtype, shape, layout,
None, out-of-range indices, outputs aliasing inputs -- on a random kernel
path), ``model`` (``load_model``), ``history`` (``read_history``, with and
without a model), ``candidates`` (``read_candidates``), ``session``
(``Session.load``) and ``trainer-candidates`` (the trainer's
``load_candidates_npz``, when the trainer extra is installed).  File cases
start from valid files and mutate them: flipped, zeroed, inserted, deleted
or duplicated bytes, truncation, and format-aware edits (numbers in the
model's config and .npy headers, zip size fields, history fields replaced by
hostile tokens).

A case passes when the call returns or raises one of the target's
documented exceptions (ValueError and its subclasses for the readers;
ValueError, IndexError, RuntimeError, TypeError for the binding).  Anything
else is a finding: another exception (MemoryError included: calls run under
an address-space limit of the worker's size + 1 GiB), or a crash of the
worker process (a segfault kills only the worker; the parent names the case
it was running and starts a new worker after it).  Each case is derived
from ``(seed, target, index)``, so ``--replay TARGET:INDEX`` reruns it.
Calls slower than 1 s are listed (not failed: machines are shared).  The
exit status is 1 when there is a finding, else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import mmap
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.append(HERE)   # helpers_model, test_kernels_errors (the binding's SPECS)

import numpy as np  # noqa: E402

TARGETS = ["binding", "model", "history", "candidates", "session", "trainer-candidates"]
SLOW_SECONDS = 1.0
_TOKENS = ["", " ", "0", "-1", "1e400", "nan", "inf", "-0", "9" * 40, "2999-01-01T00:00:00Z",
           "1970-01-01", "2024-02-30", "1.5e14", "\"", "\"\"", ",", ";", "\t", "\r", "\n",
           "\x00", "\ufeff", "é", "\udcff", "item_id", "timestamp", "session_id", "1700000000",
           "1700000000000", "2024-03-01T12:00:00+25:00", "１２３"]


# --------------------------------------------------------------------------
# byte-level mutations
# --------------------------------------------------------------------------


def mutate_bytes(rng: np.random.Generator, data: bytes, n_ops: Optional[int] = None) -> bytes:
    """A few random edits of ``data``."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5)) if n_ops is None else n_ops):
        op = int(rng.integers(7))
        pos = int(rng.integers(0, len(b) + 1))
        if op == 0 and b:                              # flip bits
            b[min(pos, len(b) - 1)] ^= int(rng.integers(1, 256))
        elif op == 1:                                  # truncate
            del b[pos:]
        elif op == 2:                                  # insert random bytes
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        elif op == 3:                                  # zero a run
            n = int(rng.integers(1, 64))
            b[pos:pos + n] = bytes(len(b[pos:pos + n]))
        elif op == 4 and b:                            # delete a run
            del b[pos:pos + int(rng.integers(1, 32))]
        elif op == 5 and b:                            # duplicate a chunk
            n = int(rng.integers(1, 256))
            b[pos:pos] = b[max(0, pos - n):pos]
        elif op == 6 and b:                            # 0xff run (large sizes)
            n = int(rng.integers(1, 9))
            b[pos:pos + n] = b"\xff" * len(b[pos:pos + n])
    return bytes(b)


_NUMBER = re.compile(rb"-?\d+")


def mutate_numbers(rng: np.random.Generator, data: bytes) -> bytes:
    """Replace a decimal number in the text (config JSON, .npy header) by a
    hostile one; lengths change, which is the point."""
    found = list(_NUMBER.finditer(data))
    if not found:
        return mutate_bytes(rng, data)
    m = found[int(rng.integers(len(found)))]
    new = str(rng.choice([0, -1, 1, 2, 3, 64, 65, 2 ** 16 + 1, 2 ** 31, 2 ** 63, 10 ** 8,
                          10 ** 30, int(m.group()) + 1, int(m.group()) * 1000])).encode()
    return data[:m.start()] + new + data[m.end():]


def rezip(rng: np.random.Generator, data: bytes) -> bytes:
    """Rebuild the archive with one member's content mutated (a valid zip
    whose inside is hostile: CRCs match, so the reader must check itself)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    except Exception:
        return mutate_bytes(rng, data)
    if not members:
        return data
    k = int(rng.integers(len(members)))
    name, content = members[k]
    how = int(rng.integers(0, 4))
    if how == 0:
        members[k] = (name, mutate_numbers(rng, content))
    elif how == 1:
        members[k] = (name, mutate_bytes(rng, content))
    elif how == 2:                                     # the same name twice, or a new name
        members.append((name if rng.random() < 0.5 else f"x{k}.npy", content))
    else:
        del members[k]
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.5 else zipfile.ZIP_STORED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # duplicate names
        with zipfile.ZipFile(out, "w", compression=method) as z:
            for n, c in members:
                z.writestr(n, c)
    return out.getvalue()


def mutate_zip_sizes(rng: np.random.Generator, data: bytes) -> bytes:
    """Change the sizes, offsets or counts in a local header, the central
    directory or the end record."""
    b = bytearray(data)
    spots = []                                         # (offset, width) of the fields
    for sig, fields in ((b"PK\x03\x04", ((18, 4), (22, 4), (26, 2), (28, 2))),
                        (b"PK\x01\x02", ((20, 4), (24, 4), (28, 2), (42, 4))),
                        (b"PK\x05\x06", ((8, 2), (10, 2), (12, 4), (16, 4)))):
        for m in re.finditer(re.escape(sig), data):
            spots += [(m.start() + at, width) for at, width in fields]
    if not spots:
        return mutate_bytes(rng, data)
    at, width = spots[int(rng.integers(len(spots)))]
    value = int(rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, 2 ** 31, int(rng.integers(0, 2 ** 32))]))
    b[at:at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(b)


def mutate_file(rng: np.random.Generator, data: bytes, zipped: bool) -> bytes:
    r = rng.random()
    if zipped and r < 0.35:
        return rezip(rng, data)
    if zipped and r < 0.5:
        return mutate_zip_sizes(rng, data)
    if r < 0.6:
        return mutate_numbers(rng, data)
    return mutate_bytes(rng, data)


# --------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------


class Target:
    """One kind of call: ``case(rng, tmpdir)`` makes and runs one hostile
    call; ``allowed`` are the exceptions it may raise."""

    name = ""
    allowed: Tuple[type, ...] = (ValueError,)

    def setup(self, tmp: str) -> None:
        pass

    def case(self, rng: np.random.Generator, tmp: str) -> None:
        raise NotImplementedError


class BindingTarget(Target):
    name = "binding"
    allowed = (ValueError, IndexError, RuntimeError, TypeError)

    def setup(self, tmp: str) -> None:
        from deeprec_edge import kernels as K
        import test_kernels_errors as T
        self.K, self.T = K, T
        self.paths = K.supported_paths()

    def packed_case(self, rng: np.random.Generator) -> None:
        """score / score_topk / dequantize_rows on a packed int8 table with
        spoilt companions (the table itself is only made by pack_rows_i8)."""
        K = self.K
        N, D = int(rng.integers(0, 40)), int(rng.integers(0, 1100 if rng.random() < 0.1 else 70))
        q = rng.integers(-128, 128, size=(N, D)).astype(np.int8)
        P = K.pack_rows_i8(spoil(rng, q, "table") if rng.random() < 0.2 else q)
        kw = dict(u=rng.standard_normal(D).astype(np.float32),
                  bias=rng.standard_normal(N).astype(np.float32),
                  scale=rng.uniform(0.001, 0.1, N).astype(np.float32),
                  idx=rng.integers(0, max(N, 1), size=int(rng.integers(0, 50))).astype(np.int32))
        for arg, kind in (("u", "f32"), ("bias", "f32"), ("scale", "f32"), ("idx", "i32")):
            if rng.random() < 0.3:
                kw[arg] = spoil(rng, kw[arg], kind)
        with self.K.forced_path(self.paths[int(rng.integers(len(self.paths)))]):
            which = int(rng.integers(3))
            if which == 0:
                K.score(P, **kw)
            elif which == 1:
                K.score_topk(P, kw["u"], int(rng.choice([0, 1, 5, N + 3])), bias=kw["bias"],
                             idx=kw["idx"], scale=kw["scale"])
            else:
                K.dequantize_rows(P, idx=kw["idx"], scale=kw["scale"])

    def case(self, rng: np.random.Generator, tmp: str) -> None:
        if rng.random() < 0.08:
            return self.packed_case(rng)
        T = self.T
        spec = T.SPECS[int(rng.integers(len(T.SPECS)))]
        kw = spec.make(rng)
        names = list(spec.arrays)
        for arg, kind in spec.arrays.items():
            if rng.random() < 0.3:
                kw[arg] = spoil(rng, kw[arg], kind)
        if spec.outputs and rng.random() < 0.15:       # an output sharing another's memory
            out = sorted(spec.outputs)[int(rng.integers(len(spec.outputs)))]
            other = names[int(rng.integers(len(names)))]
            a, b = kw.get(out), kw.get(other)
            if out != other and isinstance(a, np.ndarray) and isinstance(b, np.ndarray) \
                    and a.dtype == b.dtype and a.size and b.size:
                buf = np.zeros(max(a.size, b.size) + int(rng.integers(0, 3)), a.dtype)
                off = int(rng.integers(0, buf.size - a.size + 1))
                buf[:b.size] = b.reshape(-1)
                kw[other] = buf[:b.size].reshape(b.shape)
                kw[out] = buf[off:off + a.size].reshape(a.shape)
        for key in ("k", "lr", "step", "alpha", "beta", "max_norm", "momentum", "eps"):
            if key in kw and rng.random() < 0.2:
                kw[key] = rng.choice([0, -1, 2 ** 62, float("nan"), float("inf"), -0.0, None])
        with self.K.forced_path(self.paths[int(rng.integers(len(self.paths)))]):
            spec.fn(**kw)


def spoil(rng: np.random.Generator, a: Any, kind: str) -> Any:
    """One way to break an array argument (dtype, shape, layout, values)."""
    if not isinstance(a, np.ndarray):
        return a
    choice = int(rng.integers(11))
    if choice == 0:
        dtypes = [np.float64, np.float16, np.int32, np.int64, np.uint8, np.float32, np.bool_]
        return a.astype(dtypes[int(rng.integers(len(dtypes)))])
    if choice == 1:
        return a[None]
    if choice == 2 and a.ndim and a.shape[-1]:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]                              # not contiguous
    if choice == 3 and a.ndim:
        ax = int(rng.integers(a.ndim))
        pad = [(0, 0)] * a.ndim
        pad[ax] = (0, int(rng.integers(1, 3)))
        return np.pad(a, pad, mode="edge")
    if choice == 4 and a.ndim and a.shape[-1]:
        return a[..., :int(rng.integers(a.shape[-1]))].copy()
    if choice == 5:
        return None
    if choice == 6 and kind == "i32":
        return rng.integers(-2 ** 31, 2 ** 31, size=a.shape).astype(np.int32)
    if choice == 7 and kind == "i32":
        return (a + rng.choice([-3, -1, 1, 3, 1000])).astype(np.int32)
    if choice == 8:
        return np.zeros((0,) * max(a.ndim, 1), a.dtype)
    if choice == 9 and a.dtype.kind == "f":
        b = a.copy()
        b.reshape(-1)[:int(rng.integers(0, b.size + 1))] = rng.choice([np.nan, np.inf, -np.inf,
                                                                          3e38, -0.0, 1e-45])
        return b
    if choice == 10 and a.size:
        return np.asfortranarray(a) if a.ndim > 1 else a.astype(a.dtype.newbyteorder())
    return a


class FileTarget(Target):
    """A reader fed with mutations of valid seed files."""

    zipped = True
    suffix = ".npz"

    def seeds(self, tmp: str) -> List[bytes]:
        raise NotImplementedError

    def setup(self, tmp: str) -> None:
        self._seeds = self.seeds(tmp)

    def read(self, path: str, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def case(self, rng: np.random.Generator, tmp: str) -> None:
        data = self._seeds[int(rng.integers(len(self._seeds)))]
        for _ in range(int(rng.integers(1, 3))):
            data = mutate_file(rng, data, self.zipped)
        path = os.path.join(tmp, f"case{self.suffix}")
        with open(path, "wb") as f:
            f.write(data)
        self.read(path, rng)


def _npz_bytes(arrays: Dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


class ModelTarget(FileTarget):
    name = "model"

    def seeds(self, tmp: str) -> List[bytes]:
        from deeprec_edge.model import compress_model, save_model
        from helpers_model import random_model, random_personal
        models = [random_model(), random_model(n_items=7, e=4, hidden=[5, 3], d=4, seed=2),
                  random_model(string_ids=True, tied=True, e=6, seed=3),
                  random_personal(with_bias=True)]
        out = [_npz_bytes(m.to_arrays(), c) for m in models for c in (False, True)]
        pruned = random_model(n_items=9, e=5, hidden=6, d=5, seed=4)
        for W in (pruned.E, pruned.layers[0].W_hh, pruned.W_p):
            W[np.abs(W) < np.quantile(np.abs(W), 0.7)] = 0
        # compressed files (model format 2, storage record), through the runtime's writer
        for m, storage in [(random_model(n_items=9, e=5, hidden=6, d=5, seed=5),
                            {"tables": "int8", "gru": "float16", "head": "int4"}),
                           (random_model(n_items=9, e=6, hidden=5, d=6, tied=True, seed=6),
                            {"tables": "int3", "gru": "int4", "head": "int4", "bias": "float16"}),
                           (pruned, {"tables": "int3", "gru": "int8", "head": "int4",
                                     "bias": "float16"})]:
            for c in (False, True):
                path = os.path.join(tmp, "seed.npz")
                save_model(compress_model(m, storage), path, compressed=c)
                with open(path, "rb") as f:
                    out.append(f.read())
        return out

    def read(self, path: str, rng: np.random.Generator) -> Any:
        from deeprec_edge.model import load_model
        return load_model(path)


class HistoryTarget(FileTarget):
    name = "history"
    zipped = False
    suffix = ".csv"

    def seeds(self, tmp: str) -> List[bytes]:
        from deeprec_edge.demo import demo_paths
        from helpers_model import random_model
        self.model = random_model(n_items=40)
        ids = self.model.item_ids.tolist()
        with open(demo_paths()[1], "rb") as f:
            demo = f.read()
        rng = np.random.default_rng(0)
        rows_s = "item_id,timestamp,session_id\n" + "".join(
            f"{ids[int(rng.integers(40))]},{1_700_000_000 + 60 * i},s{i // 7}\n" for i in range(60))
        rows_ms = "ts;aid\n" + "".join(
            f"{1_700_000_000_000 + 60_000 * i};{ids[i % 40]}\n" for i in range(40))
        rows_iso = "time\titem\tnote\n" + "".join(
            f"2024-03-01T12:{i:02d}:00+02:00\t{ids[i % 40]}\t\"a, b\"\n" for i in range(50))
        return [demo[:6000], rows_s.encode(), rows_ms.encode(), rows_iso.encode("utf-8")]

    def case(self, rng: np.random.Generator, tmp: str) -> None:
        data = self._seeds[int(rng.integers(len(self._seeds)))]
        if rng.random() < 0.4:                         # hostile tokens in fields
            text = data.decode("utf-8", "surrogateescape")
            parts = re.split(r"([,;\t\n])", text)
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, len(parts)))
                parts[i] = str(rng.choice(_TOKENS))
            data = "".join(parts).encode("utf-8", "surrogateescape")
        else:
            data = mutate_file(rng, data, False)
        model = self.model if rng.random() < 0.5 else None
        from deeprec_edge.history import read_history
        if rng.random() < 0.5:
            read_history(io.BytesIO(data), model=model)
        else:
            path = os.path.join(tmp, "case.csv")
            with open(path, "wb") as f:
                f.write(data)
            read_history(path, model=model)


class CandidatesTarget(FileTarget):
    name = "candidates"

    def seeds(self, tmp: str) -> List[bytes]:
        from deeprec_edge.candidates import CANDIDATES_FORMAT
        self.text_seeds = [b"user_id,item_id,rank,score\nu1,1000,1,0.5\nu1,1007,2,0.4\n"
                           b"u2,1014,1,0.9\n", b"item_id\n1000\n1007\n\n1014\n"]
        arrays = dict(format=np.array(CANDIDATES_FORMAT), version=np.array(1, np.int64),
                      user_ids=np.array(["u1", "u2"]), offsets=np.array([0, 2, 3], np.int64),
                      item_ids=np.array([1000, 1007, 1014], np.int64),
                      scores=np.array([0.5, 0.4, 0.9], np.float32))
        return [_npz_bytes(arrays, False), _npz_bytes(arrays, True)]

    def case(self, rng: np.random.Generator, tmp: str) -> None:
        from deeprec_edge.candidates import read_candidates
        if rng.random() < 0.3:
            data = mutate_file(rng, self.text_seeds[int(rng.integers(2))], False)
            path = os.path.join(tmp, "case.csv")
        else:
            data = mutate_file(rng, self._seeds[int(rng.integers(2))], True)
            path = os.path.join(tmp, "case.npz")
        with open(path, "wb") as f:
            f.write(data)
        read_candidates(path, user=["u1", "u2", None][int(rng.integers(3))])


class SessionTarget(FileTarget):
    name = "session"

    def seeds(self, tmp: str) -> List[bytes]:
        import deeprec_edge as de
        from helpers_model import random_model
        self.model = random_model(n_items=20, hidden=[6, 4])
        s = de.Session(self.model)
        out = []
        for clicks in (0, 3, 9):
            s.reset()
            for i in range(clicks):
                s.click(self.model.item_ids[i], timestamp=1_700_000_000.0 + i)
            p = os.path.join(tmp, "seed.npz")
            s.save(p)
            with open(p, "rb") as f:
                out.append(f.read())
        self.session = s
        return out

    def read(self, path: str, rng: np.random.Generator) -> Any:
        self.session.load(path)


class TrainerCandidatesTarget(CandidatesTarget):
    name = "trainer-candidates"

    def setup(self, tmp: str) -> None:
        from deeprec_edge.trainer.candidates import load_candidates_npz  # needs the extra
        self.load = load_candidates_npz
        super().setup(tmp)

    def case(self, rng: np.random.Generator, tmp: str) -> None:
        data = mutate_file(rng, self._seeds[int(rng.integers(2))], True)
        path = os.path.join(tmp, "case.npz")
        with open(path, "wb") as f:
            f.write(data)
        self.load(path, item_ids=np.array([1000, 1007]) if rng.random() < 0.5 else None)


_CLASSES = {c.name: c for c in (BindingTarget, ModelTarget, HistoryTarget, CandidatesTarget,
                                SessionTarget, TrainerCandidatesTarget)}


# --------------------------------------------------------------------------
# running cases
# --------------------------------------------------------------------------


def case_rng(seed: int, target: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, TARGETS.index(target), index])


def run_case(t: Target, seed: int, index: int, tmp: str) -> Optional[str]:
    """None if the case passed, else a description of the finding."""
    if os.environ.get("DEEPREC_EDGE_FUZZ_PLANT_CRASH") == str(index):
        os.abort()              # tests/test_fuzz.py: the harness must report a crash
    rng = case_rng(seed, t.name, index)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t.case(rng, tmp)
    except t.allowed:
        return None
    except BaseException as e:  # noqa: BLE001 - every other exception is a finding
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.format_exc().strip().splitlines()
        return f"{type(e).__name__}: {str(e)[:300]} | {' / '.join(tb[-6:])[:1500]}"
    return None


def _limit_memory(extra: int = 1 << 30) -> None:
    """An address-space limit: this process's size now + ``extra``, so an
    unbounded allocation is a MemoryError (a finding), not a swapped VM."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # a crash leaves no core file
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))
    except (ImportError, OSError, ValueError):
        pass


def worker(targets: List[str], seed: int, start: int, stop: int, state_path: str,
           tmp_dir: Optional[str] = None) -> int:
    """Run cases start..stop-1, each on targets[index % len(targets)]; the
    index being run is kept in ``state_path`` (an mmap) for the parent.
    Files go to ``tmp_dir`` (the parent's, removed by it however the worker
    ends), else to a temporary directory of its own."""
    insts = []
    with contextlib.ExitStack() as stack:
        tmp = tmp_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="deeprec-edge-fuzz-"))
        for name in targets:
            t = _CLASSES[name]()
            t.setup(tmp)
            insts.append(t)
        _limit_memory()
        with open(state_path, "r+b") as f:
            state = mmap.mmap(f.fileno(), 16)
        for index in range(start, stop):
            t = insts[index % len(insts)]
            struct.pack_into("<qq", state, 0, index, 0)
            t0 = time.perf_counter()
            finding = run_case(t, seed, index, tmp)
            took = time.perf_counter() - t0
            if finding is not None:
                print(json.dumps({"kind": "finding", "target": t.name, "index": index,
                                  "what": finding}), flush=True)
            if took > SLOW_SECONDS:
                print(json.dumps({"kind": "slow", "target": t.name, "index": index,
                                  "seconds": round(took, 3)}), flush=True)
        struct.pack_into("<qq", state, 0, stop, 1)
    return 0


def drive(targets: List[str], seed: int, calls: int, jobs: int, quiet: bool) -> int:
    """Run ``calls`` cases in ``jobs`` worker processes; print findings and a
    summary; return the exit status."""
    t0 = time.time()
    bounds = [calls * j // jobs for j in range(jobs + 1)]
    pending = [(bounds[j], bounds[j + 1]) for j in range(jobs) if bounds[j] < bounds[j + 1]]
    running: List[Tuple[subprocess.Popen, str, str, int, int]] = []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

    def launch(start: int, stop: int) -> None:
        fd, state = tempfile.mkstemp(prefix="deeprec-edge-fuzz-state-")
        os.write(fd, struct.pack("<qq", start, 0))
        os.close(fd)
        tmp = tempfile.mkdtemp(prefix="deeprec-edge-fuzz-")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{start}:{stop}",
               "--seed", str(seed), "--targets", ",".join(targets), "--state", state,
               "--tmp", tmp]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        running.append((p, state, tmp, start, stop))

    def stop_all(signum: int = 0, frame: Any = None) -> None:
        """Kill the workers and remove their files (a worker killed by a
        crashing case, or this run stopped, leaves nothing in /tmp)."""
        for p, state, tmp, _, _ in running:
            if p.poll() is None:
                p.kill()
                p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.exists(state):
                os.unlink(state)
        running.clear()
        if signum:
            raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop_all)
    try:
        findings, slow, crashes = _collect(launch, pending, running, targets, quiet, t0)
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, old)
    return _report(findings, slow, crashes, targets, seed, calls, t0)


def _collect(launch: Callable[[int, int], None], pending: List[Tuple[int, int]],
             running: List[Any], targets: List[str], quiet: bool, t0: float
             ) -> Tuple[List[Any], List[Any], List[Any]]:
    """Wait for the workers in turn, relaunching after a crashing case."""
    findings: List[Any] = []
    slow: List[Any] = []
    crashes: List[Any] = []
    for start, stop in pending:
        launch(start, stop)
    while running:
        p, state, tmp, start, stop = running[0]
        out, _ = p.communicate()
        running.pop(0)
        shutil.rmtree(tmp, ignore_errors=True)
        for line in out.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            (findings if rec["kind"] == "finding" else slow).append(rec)
        with open(state, "rb") as f:
            index, done = struct.unpack("<qq", f.read(16))
        os.unlink(state)
        if p.returncode != 0 and not done:
            t = targets[index % len(targets)]
            crashes.append({"target": t, "index": index, "returncode": p.returncode})
            if index + 1 < stop:
                launch(index + 1, stop)                # carry on after the crashing case
        elif not quiet:
            print(f"worker {start}..{stop} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    return findings, slow, crashes


def _report(findings: List[Any], slow: List[Any], crashes: List[Any], targets: List[str],
            seed: int, calls: int, t0: float) -> int:
    for rec in findings:
        print(f"FINDING {rec['target']}:{rec['index']} {rec['what']}")
    for rec in crashes:
        print(f"CRASH {rec['target']}:{rec['index']} exit status {rec['returncode']} "
              f"(replay: python {os.path.relpath(__file__)} --seed {seed} "
              f"--replay {rec['target']}:{rec['index']})")
    for rec in slow:
        print(f"SLOW {rec['target']}:{rec['index']} {rec['seconds']} s")
    n = len(targets)                                   # case i runs on targets[i % n]
    per = {t: calls // n + (1 if j < calls % n else 0) for j, t in enumerate(targets)}
    print(f"calls: {calls} ({', '.join(f'{t} {n}' for t, n in per.items())}); seed {seed}; "
          f"findings: {len(findings)}; crashes: {len(crashes)}; slow (> {SLOW_SECONDS:g} s): "
          f"{len(slow)}; {time.time() - t0:.0f} s")
    return 1 if findings or crashes else 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="fuzz.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--calls", type=int, default=10_000, help="cases to run (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help=f"comma-separated, from {', '.join(TARGETS)} (default all available)")
    p.add_argument("--replay", metavar="TARGET:INDEX", help="run one case in this process")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    targets = [t for t in a.targets.split(",") if t]
    bad = [t for t in targets if t not in _CLASSES]
    if bad:
        p.error(f"unknown target(s) {bad}; choose from {TARGETS}")
    if "trainer-candidates" in targets and a.worker is None and a.replay is None:
        try:
            import deeprec_edge.trainer.candidates  # noqa: F401
        except ImportError:
            targets.remove("trainer-candidates")
            print("trainer extra not installed: skipping target trainer-candidates",
                  file=sys.stderr)
    if a.worker:
        start, stop = (int(x) for x in a.worker.split(":"))
        return worker(targets, a.seed, start, stop, a.state, a.tmp)
    if a.replay:
        name, index = a.replay.split(":")
        t = _CLASSES[name]()
        with tempfile.TemporaryDirectory() as tmp:
            t.setup(tmp)
            t.case(case_rng(a.seed, name, int(index)), tmp)   # raises, with a traceback
        print("the case passed")
        return 0
    return drive(targets, a.seed, a.calls, max(1, a.jobs), a.quiet)


if __name__ == "__main__":
    sys.exit(main())
