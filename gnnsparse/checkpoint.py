"""Checkpoints of training runs, written atomically, and bit-identical resume.

A :class:`Checkpointer` owns one folder. Its file ``checkpoint.pt`` holds

* ``meta``: what the whole job is (for ``gnnsparse compare``: dataset, task, seeds, sparsities and
  the shared :class:`~gnnsparse.train.TrainConfig`); resuming with other values is refused;
* ``finished``: the result rows of the runs already completed (a resumed job returns them instead
  of training again);
* ``current``: the state of the run in progress at its last checkpoint (written by
  :mod:`gnnsparse.train`): model state including every ``SparseLinear`` structure (its nnz may
  differ from a fresh model's), optimizer state (Adam's per-nnz moments and step), the regime's
  state (pruning masks and schedule position, drop-and-grow counters and history), every random
  state (batch/negative generator at the start of the epoch and now, the mask generator, torch's
  global generator for dropout; numpy's and Python's global generators are not used in training),
  the FLOP cache and totals, the run's counters (step, seconds, best
  validation value, the selected state, the curve), the resolved sparse-op backend, each sparse
  layer's executor decision, and the position ``(phase, epoch, next batch)``.

While a :class:`Checkpointer` is open its process holds the folder's ``.lock`` (``flock``): a second
job on the same folder is refused instead of interleaving its checkpoints with the first one's.

Each finished run's final (selected) model state goes to ``final-<regime>-<sparsity>-seed<seed>.pt``
beside it.

Every write goes to a temporary file in the same folder (``.tmp-*.pt``), is flushed and fsynced, then
renamed over the target (``os.replace``) and the folder fsynced: a crash leaves the previous complete
file, never a truncated one; temporary files left by a crash are removed when a
:class:`Checkpointer` opens the folder. Files are read with ``torch.load(weights_only=True)``: the
payload is tensors, dicts, lists, numbers, strings, booleans and None only.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import tempfile
import weakref

import torch

from ._failpoints import failpoint

__all__ = ["FORMAT_VERSION", "CHECKPOINT_NAME", "LOCK_NAME", "Checkpointer", "atomic_save", "load_file",
           "run_key", "describe_difference", "data_fingerprint"]

#: Version of the checkpoint payload layout; other versions are refused with a clear error.
FORMAT_VERSION = 1
#: File name of the job's checkpoint inside the checkpoint folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: File in the checkpoint folder that a running job holds locked (``flock``): one job per folder.
LOCK_NAME = ".lock"
_MAGIC = "gnnsparse-checkpoint"
_TMP_PREFIX = ".tmp-"


def _fsync_dir(directory: str) -> None:
    """fsync a folder so a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder; the rename holds
            os.fsync(fd)
    finally:
        os.close(fd)


class _PartialWriteFailpoint:
    """File wrapper for ``torch.save``: after the first chunk is on disk, failpoint ``checkpoint-write``
    (so a test can kill the process with the temporary file partly written)."""

    def __init__(self, f):
        self.f, self.written, self.fired = f, 0, False
        self.error: OSError | None = None  # torch.save replaces a failed write's OSError by a RuntimeError

    def write(self, data) -> int:
        try:
            n = self.f.write(data)
        except OSError as e:
            self.error = e
            raise
        self.written += n
        if not self.fired and self.written > 0:
            self.fired = True
            self.f.flush()
            failpoint("checkpoint-write")
        return n

    def flush(self) -> None:
        self.f.flush()


def atomic_save(path: str, payload: dict) -> None:
    """``torch.save(payload)`` to ``path`` atomically.

    The payload is streamed to a temporary file beside ``path`` (flushed and fsynced), which is then
    renamed over ``path`` (``os.replace``) and the folder fsynced; an interrupted write leaves the
    previous file (or none) under ``path`` and at worst a ``.tmp-*.pt`` file, never a truncated
    ``path``. Failpoint ``checkpoint-write`` fires once the temporary file is partly written.

    Raises:
        OSError: the folder cannot be created or written, or a write fails (disk full, quota: the
            message names ``path`` and the reason; the previous file is kept).
    """
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=_TMP_PREFIX, suffix=".pt")
    except OSError as e:
        raise OSError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    writer = None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                writer = _PartialWriteFailpoint(f)
                torch.save(payload, writer)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
            os.replace(tmp, path)
        except RuntimeError:
            if writer is None or writer.error is None:
                raise
            e = writer.error  # a full disk or quota: torch.save reports it as "unexpected pos"
            raise OSError(e.errno, f"cannot write checkpoint {path}: {e.strerror or e}") from None
        except OSError as e:
            raise OSError(e.errno, f"cannot write checkpoint {path}: {e.strerror or e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(d)


def load_file(path: str) -> dict:
    """Read a checkpoint file written by :func:`atomic_save` (``torch.load(weights_only=True)``).

    Returns:
        The payload dict (format marker and version checked).

    Raises:
        ValueError: the file is missing, unreadable, truncated or corrupt, not a gnnsparse
            checkpoint, or of another format version (the message names the file).
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed global: all mean "not ours / broken"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        global_ = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+)", str(e))
        if global_:  # a pickle naming a class or function (random bytes fail as "Unsupported operand")
            raise ValueError(f"checkpoint {path} holds Python objects other than tensors and plain data "
                             f"({global_.group(1)}), "
                             f"which could run code when loaded; it was not written by gnnsparse: refused "
                             f"(torch.load weights_only)") from None
        raise ValueError(f"checkpoint {path} is corrupt or truncated and cannot be read ({msg}); delete it "
                         f"to start over") from None
    if not isinstance(obj, dict) or obj.get("format") != _MAGIC:
        raise ValueError(f"{path} is not a gnnsparse checkpoint")
    if obj.get("version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {obj.get('version')!r}; this gnnsparse "
                         f"reads version {FORMAT_VERSION}")
    if "meta" in obj or "finished" in obj or "current" in obj:  # a job checkpoint (final-*.pt hold "model")
        _check_job_payload(path, obj)
    return obj


def _check_job_payload(path: str, obj: dict) -> None:
    """Refuse a job checkpoint whose top-level structure is not what :class:`Checkpointer` writes
    (a damaged or hand-edited file): ``meta`` a dict, ``finished`` a dict of run key to JSON object,
    ``current`` None or a dict with a string ``key`` and a dict ``config``."""
    def bad(what: str):
        return ValueError(f"checkpoint {path} is damaged: {what}; delete it to start over")

    if not isinstance(obj.get("meta"), dict):
        raise bad("field meta is missing or not a dict")
    finished = obj.get("finished")
    if not isinstance(finished, dict):
        raise bad("field finished is missing or not a dict")
    for key, row in finished.items():
        try:
            ok = isinstance(key, str) and isinstance(json.loads(row), dict)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(f"the result row of finished run {key!r} is not a JSON object")
    cur = obj.get("current", None)
    if cur is not None and not (isinstance(cur, dict) and isinstance(cur.get("key"), str)
                                and isinstance(cur.get("config"), dict)):
        raise bad("field current (the run in progress) is not a dict with a string key and a dict config")


def data_fingerprint(data) -> str:
    """sha256 of a loaded dataset's content: every tensor and numpy array attribute of ``data`` (name,
    dtype, shape and bytes, in name order). Two files that differ in any edge, time, label or feature
    give different fingerprints, even with the same name, size and counts."""
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(vars(data)):
        value = vars(data)[name]
        if isinstance(value, torch.Tensor):
            arr = value.detach().cpu().contiguous().numpy()
        elif isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
        else:
            continue
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


#: realpath of a locked checkpoint folder -> [fd of its lock file, Checkpointers of this process on it]
_LOCKS: dict[str, list] = {}


def _lock_folder(directory: str) -> str:
    """Lock ``directory``'s :data:`LOCK_NAME` (``flock``, exclusive, non-blocking) for this process;
    Checkpointers of the same process share the lock. Returns the lock's registry key.

    Raises:
        ValueError: another process holds the folder (a job is running on it).
    """
    import fcntl

    key = os.path.realpath(directory)
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return key
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise OSError(f"cannot use checkpoint folder {directory}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"checkpoint folder {directory} is in use by another running gnnsparse job (one job "
                         f"per folder); wait for it to end or choose another --checkpoint-dir") from None
    except OSError:  # a file system without locks (some network mounts): run unlocked
        pass
    _LOCKS[key] = [fd, 1]
    return key


def _unlock_folder(key: str) -> None:
    """Drop one Checkpointer's share of the lock taken by :func:`_lock_folder`; the last one closes it."""
    entry = _LOCKS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _LOCKS[key]
        with contextlib.suppress(OSError):
            os.close(entry[0])  # closing releases the flock


def run_key(regime: str, sparsity: float, seed: int) -> str:
    """The name of one training run in a checkpoint: ``"<regime>-<sparsity>-seed<seed>"``."""
    return f"{regime}-{float(sparsity)!r}-seed{int(seed)}"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def describe_difference(saved: dict, now: dict, prefix: str = "") -> str | None:
    """The first field where two (nested) dicts differ, as ``"field (checkpoint X, now Y)"``; None
    when they are equal."""
    for key in list(saved) + [k for k in now if k not in saved]:
        name = f"{prefix}{key}"
        if key not in saved or key not in now:
            where = "the checkpoint" if key in saved else "this run"
            return f"{name} (only in {where})"
        a, b = saved[key], now[key]
        if isinstance(a, dict) and isinstance(b, dict):
            sub = describe_difference(a, b, f"{name}.")
            if sub is not None:
                return sub
        elif not _same(a, b):
            return f"{name} (checkpoint {a!r}, now {b!r})"
    return None


def _json_normal(obj):
    """``obj`` as JSON would return it (tuples become lists, keys strings); NaN/inf kept."""
    return json.loads(json.dumps(obj))


class Checkpointer:
    """Periodic, atomic checkpoints of a job of training runs in one folder, and their resume.

    Pass it to :func:`gnnsparse.train.run_dense`, :func:`~gnnsparse.train.run_train_and_prune` and
    :func:`~gnnsparse.train.run_sparse_training` (``checkpoint=``). Each run then saves its state
    every ``every`` optimizer steps and after every epoch's evaluation and model selection; a run
    that finished is recorded with its result row, and asking for it again returns that row without
    training. With ``resume=True`` the run in progress continues from its last checkpoint and ends
    bit-identical (weights, masks, metrics, FLOPs; not timings) to a run that was never
    interrupted, on the same machine and software with the same seed.

    Args:
        directory: checkpoint folder (created if missing).
        every: optimizer steps between mid-epoch checkpoints (>= 1); None: only at epoch ends.
        resume: continue what ``directory`` holds (a folder without a checkpoint starts fresh);
            False refuses a folder that already holds a checkpoint.
        meta: what the job is (JSON-like dict: dataset, configuration...); with ``resume`` a
            checkpoint whose ``meta`` differs is refused, naming the first differing field.
        writer: False for the data-parallel ranks other than 0: the checkpointer reads the folder
            (every rank resumes from the same file, on a shared folder across machines) and keeps
            the job's state in memory, but writes and deletes nothing; rank 0 writes. The saved
            state does not depend on the number of ranks (see :mod:`gnnsparse.train`), so a job
            checkpointed with K processes resumes with any number.

    Raises:
        ValueError: ``every`` < 1; ``directory`` is a file; another process holds ``directory``
            (a running job locks its folder until its Checkpointer is closed or the process ends);
            a checkpoint exists and ``resume`` is False; the checkpoint is unreadable or damaged
            (names the file) or was written for another job (names the field).
    """

    def __init__(self, directory: str, *, every: int | None = None, resume: bool = False,
                 meta: dict | None = None, writer: bool = True):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint every must be None or an int >= 1, got {every!r}")
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"checkpoint folder {directory} is a file; give a folder")
        self.directory = directory
        self.every = every
        self.writer = bool(writer)
        self.meta = _json_normal(meta or {})
        self.path = os.path.join(directory, CHECKPOINT_NAME)
        self.finished_rows: dict[str, dict] = {}
        self.current: dict | None = None
        self.resumed = False
        if self.writer:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise OSError(f"cannot create checkpoint folder {directory}: {e.strerror or e}") from None
            # before reading the checkpoint or removing temporary files: a second job on the folder would
            # delete the first one's temporary file mid-write and interleave its checkpoints with its own
            lock = _lock_folder(directory)
            self._unlock = weakref.finalize(self, _unlock_folder, lock)
        else:  # a reading rank of a distributed job: rank 0 holds the lock and writes
            self._unlock = lambda: None
        try:
            if os.path.exists(self.path):
                if not resume:
                    raise ValueError(f"{directory} already holds a checkpoint ({CHECKPOINT_NAME}); resume it "
                                     f"(--resume) or choose another folder")
                saved = load_file(self.path)
                diff = describe_difference(saved.get("meta", {}), self.meta)
                if diff is not None:
                    raise ValueError(f"checkpoint {self.path} was written for a different job: {diff}")
                self.finished_rows = {k: json.loads(v) for k, v in saved.get("finished", {}).items()}
                self.current = saved.get("current")
                self.resumed = True
            if self.writer:
                for tmp in glob.glob(os.path.join(glob.escape(directory), _TMP_PREFIX + "*.pt")):
                    os.unlink(tmp)  # left by a crash during a write: never a complete checkpoint
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release this Checkpointer's share of the folder's lock (also done when it is garbage
        collected or the process ends); it must not save after this."""
        self._unlock()

    # ------------------------------------------------------------------------------ queries
    def finished(self, key: str) -> dict | None:
        """The result row of the finished run ``key`` (see :func:`run_key`), or None."""
        return self.finished_rows.get(key)

    def due(self, step: int) -> bool:
        """True when a mid-epoch checkpoint is due after optimizer step ``step`` (1-based)."""
        return self.every is not None and step % self.every == 0

    def load_run(self, key: str, config: dict) -> dict | None:
        """The saved state of run ``key`` in progress, or None when it starts from scratch.

        Raises:
            ValueError: the checkpoint's run in progress is another run (names regime, sparsity and
                seed) or had another configuration (names the field).
        """
        cur = self.current
        if cur is None:
            return None
        if cur["key"] != key:
            raise ValueError(f"checkpoint {self.path} holds the unfinished run {cur['key']}, not {key}: resume "
                             f"with the same regimes, sparsities and seeds in the same order")
        diff = describe_difference(cur["config"], _json_normal(config), "config.")
        if diff is not None:
            raise ValueError(f"checkpoint {self.path} was written with a different configuration: {diff}")
        return cur

    def final_path(self, key: str) -> str:
        """File of the finished run ``key``'s final (selected) model state."""
        return os.path.join(self.directory, f"final-{key}.pt")

    # ------------------------------------------------------------------------------ writes
    def _write(self) -> None:
        if not self.writer:
            return
        atomic_save(self.path, {
            "format": _MAGIC, "version": FORMAT_VERSION, "meta": self.meta,
            "finished": {k: json.dumps(v) for k, v in self.finished_rows.items()},
            "current": self.current})

    def save_run(self, key: str, config: dict, state: dict) -> None:
        """Record ``state`` (tensors, dicts, lists, numbers, strings) as run ``key``'s latest state."""
        self.current = {"key": key, "config": _json_normal(config), **state}
        self._write()

    def finish_run(self, key: str, row: dict, final_state: dict) -> dict:
        """Record run ``key`` as finished: its final model state (``final-<key>.pt``) and its result
        row (returned as the JSON-normalized dict a resumed job will return too)."""
        if self.writer:
            atomic_save(self.final_path(key), {"format": _MAGIC, "version": FORMAT_VERSION, "key": key,
                                               "model": final_state})
        row = _json_normal(row)
        self.finished_rows[key] = row
        self.current = None
        self._write()
        return row
