"""Where a batch job's chunks live: in memory, or on disk with checksums, resume and a lock.

On disk, ``out_dir`` holds ``manifest.json`` (the job's identity and, once assembled, the
key and checksum of every chunk in the final files), ``chunks/chunk_XXXXXX.npz`` (each
with its chunk key and a checksum of its arrays), the final files (``contributions.npy``,
...) and ``lock`` (see :class:`DirLock`). Every file is written atomically: a temporary
file named after its writer's host and pid, ``fsync``, ``os.replace``. A chunk can be
served by its chunk file or by the rows of the final files; either must carry the chunk's
current key and a matching checksum, so a stale, truncated or corrupt chunk is recomputed
(with one warning per run when it is damaged), and scores of another job or of other rows
are never returned. Temporary files are deleted only when their writer is known to be gone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deepliftjax._errors import DeepLiftError, error
from deepliftjax._identity import FORMAT, array_digest

__all__ = ["MemoryStore", "DiskStore", "DirLock", "save_atomic", "checksum"]

MANIFEST = "manifest.json"
LOCK = "lock"
_KEY, _SUM = "__chunk_key__", "__checksum__"
_TMP = ".tmp."
_FOREIGN_TMP_AGE_S = 3600  # a temporary file of another host is taken as orphaned after this


# ---- writers: host, pid and whether they are alive ------------------------------------------


def _host() -> str:
    """This host, as lock records and temporary file names name it (no dots: names are
    split on them)."""
    return socket.gethostname().replace(".", "_") or "localhost"


def _pid_namespace() -> str:
    """The pid namespace (containers on one host reuse pids; their pids are not ours)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` of this host runs (and is the one that started at ``start``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return start is None or _start_time(pid) in (None, start)


def _tmp_path(path: str) -> str:
    """A temporary file next to ``path``, named after its writer: host, pid, random."""
    return f"{path}{_TMP}{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _orphaned(path: str) -> bool:
    """Whether a temporary file's writer is gone: a dead process of this host, or a file of
    another host (or unnamed writer) untouched for an hour. This process's own files are
    never orphans (another thread may be writing them)."""
    tail = os.path.basename(path).rsplit(_TMP, 1)[-1].rsplit(".", 2)
    if len(tail) == 3 and tail[0] == _host() and tail[1].isdigit():
        pid = int(tail[1])
        return pid != os.getpid() and not _alive(pid)
    try:
        return time.time() - os.path.getmtime(path) > _FOREIGN_TMP_AGE_S
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:  # removed by another cleaner meanwhile
        pass


def _remove_orphans(directory: str) -> None:
    for f in os.listdir(directory):
        path = os.path.join(directory, f)
        if _TMP in f and _orphaned(path):
            _remove(path)


def save_atomic(path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(fh)`` on a unique temporary file, fsync, rename."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """Checksum of a chunk's arrays (names, dtypes, shapes and bytes)."""
    names = sorted(arrays)
    return array_digest(np.array(names), *(arrays[k] for k in names))


# ---- one job per out_dir at a time ----------------------------------------------------------

_LOCAL = threading.Condition()  # guards _HELD; notified when a thread releases an out_dir
_HELD: dict[str, dict[str, Any]] = {}  # out_dir (real path) -> the record of its holder here
# lockf failing with these means the file system has no POSIX locks (NFS without lockd)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_POLL_S = 0.2
_RECORD_WAIT_S = 5.0  # how long a holder may take to write its record


def _busy(out_dir: str, holder: dict[str, Any] | None, job: str) -> DeepLiftError:
    if holder is None:
        who = "another process (it has not written its host and pid yet)"
    else:
        who = f"process {holder.get('pid')} on host {holder.get('host')}"
        who += f" (thread {holder['thread']})" if holder.get("thread") else ""
        started = holder.get("started")
        if started:
            who += f", running since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
        who += f", for job {str(holder.get('job'))[:12]}"
    return error(
        f"{out_dir} is in use by another job: it is locked by {who}; this call is job "
        f"{job[:12]}. Nothing was read or written.",
        "use another out_dir for this job, or wait for that one to finish. If that process "
        "is gone (another host crashed), "
        f"delete {os.path.join(out_dir, LOCK)}.held if it exists and rerun.",
    )


class DirLock:
    """An advisory lock on ``out_dir``, held by one job for its whole run.

    The lock is a POSIX record lock (``fcntl.lockf``) on ``out_dir/lock``, which records
    the holder's host, pid, thread and job. The kernel releases it when its process dies,
    however it dies, and NFS (v4, or v3 with lockd) shares it between hosts. Where the
    file system refuses POSIX locks, the lock is the exclusive creation of
    ``out_dir/lock.held`` instead; a record whose process is gone from this host is stale
    and removed. Threads of one process are told apart by a table in the process.

    Another call of the *same* job waits for the holder to finish (then reuses its
    chunks); a call of a different job raises at once, naming the holder.

    Args:
      out_dir: the job's directory (it must exist).
      job: the job's digest.
      notify: called with a message once, when the call starts to wait.
    """

    def __init__(self, out_dir: str, job: str, notify: Callable[[str], None] | None = None):
        self.dir = os.fspath(out_dir)
        self.key = os.path.realpath(self.dir)
        self.job, self.notify = job, notify
        self.record = {
            "host": _host(),
            "pidns": _pid_namespace(),
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
            "thread": threading.current_thread().name,
            "job": job,
            "started": time.time(),
            "token": uuid.uuid4().hex,
        }
        self._fd: int | None = None
        self._held_file: str | None = None
        self._waiting = False

    @property
    def path(self) -> str:
        return os.path.join(self.dir, LOCK)

    def _wait(self, holder: dict[str, Any] | None) -> None:
        """Same job elsewhere: say so once, then poll."""
        if not self._waiting and self.notify is not None:
            who = "" if holder is None else f" (process {holder['pid']} on {holder['host']})"
            self.notify(
                f"{self.dir} is in use by the same job{who}; waiting for it to finish, "
                "then reusing its chunks"
            )
        self._waiting = True

    # ---- acquire / release ------------------------------------------------------------------
    def acquire(self) -> DirLock:
        """Take the lock; wait while the same job holds it elsewhere.

        Raises:
          DeepLiftError: a different job holds it (the message names its host and pid).
        """
        with _LOCAL:  # threads of this process first
            while self.key in _HELD:
                holder = _HELD[self.key]
                if holder["job"] != self.job:
                    raise _busy(self.dir, holder, self.job)
                self._wait(holder)
                _LOCAL.wait(_POLL_S)
            _HELD[self.key] = self.record
        try:
            self._acquire_file()
        except BaseException:
            self._forget()
            raise
        return self

    def _acquire_file(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            unknown_since = None
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno in _NO_LOCKS:
                        os.close(fd)
                        fd = None
                        self._acquire_exclusive_file()
                        return
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                holder = _read_record(fd)
                if holder is None:  # the holder has just taken it: give it time to write
                    unknown_since = unknown_since or time.monotonic()
                    if time.monotonic() - unknown_since > _RECORD_WAIT_S:
                        raise _busy(self.dir, None, self.job)
                elif holder.get("job") != self.job:
                    raise _busy(self.dir, holder, self.job)
                else:
                    unknown_since = None
                    self._wait(holder)
                time.sleep(_POLL_S)
            _write_record(fd, self.record)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        self._fd = fd

    def _acquire_exclusive_file(self) -> None:
        """The lock without POSIX locks: ``lock.held`` created exclusively."""
        held = self.path + ".held"
        unknown_since = None
        while True:
            try:
                fd = os.open(held, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_record_file(held)
                if holder is None:
                    unknown_since = unknown_since or time.monotonic()
                    if time.monotonic() - unknown_since > _RECORD_WAIT_S:
                        raise _busy(self.dir, None, self.job) from None
                elif _stale(holder):
                    _break(held, holder)
                    continue
                elif holder.get("job") != self.job:
                    raise _busy(self.dir, holder, self.job) from None
                else:
                    unknown_since = None
                    self._wait(holder)
                time.sleep(_POLL_S)
                continue
            try:
                _write_record(fd, self.record)
            finally:
                os.close(fd)
            self._held_file = held
            return

    def verify(self) -> None:
        """Check that the lock is still this call's (before the final files are written).

        Raises:
          DeepLiftError: another process holds it too: the file system's locks are not
            shared between the hosts that use ``out_dir``.
        """
        if self._fd is not None:
            holder = _read_record(self._fd)
        elif self._held_file is not None:
            holder = _read_record_file(self._held_file)
        else:
            return
        if holder is None or holder.get("token") != self.record["token"]:
            who = (
                "unknown" if holder is None else f"pid {holder.get('pid')} on {holder.get('host')}"
            )
            raise error(
                f"the lock of {self.dir} was taken by another process ({who}) while this job "
                "held it: the file system does not share locks between the hosts that use it. "
                "The final files were not written.",
                "run one job per out_dir at a time on this file system (NFS mounted with "
                "'nolock' or 'local_lock' keeps locks on each host), then rerun: finished "
                "chunks are reused.",
            )

    def release(self) -> None:
        """Give the lock up (clearing its record first, so nobody reads a stale one)."""
        try:
            if self._fd is not None:
                import fcntl

                try:
                    os.ftruncate(self._fd, 0)
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._fd)
                    self._fd = None
            if self._held_file is not None:
                if (_read_record_file(self._held_file) or {}).get("token") == self.record["token"]:
                    os.remove(self._held_file)
                self._held_file = None
        finally:
            self._forget()

    def _forget(self) -> None:
        with _LOCAL:
            if _HELD.get(self.key) is self.record:
                del _HELD[self.key]
            _LOCAL.notify_all()

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read_record(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 1 << 16, 0)
        record = json.loads(data)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _read_record_file(path: str) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_record(fd)
    finally:
        os.close(fd)


def _stale(holder: dict[str, Any]) -> bool:
    """Whether a lock record's process is gone: only decidable for this host's processes."""
    if holder.get("host") != _host() or holder.get("pidns", "") != _pid_namespace():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and not _alive(pid, holder.get("start"))


def _break(held: str, holder: dict[str, Any]) -> None:
    """Remove a stale ``lock.held``: renamed aside first, and put back if what was renamed is
    not the stale record (a live holder took the lock meanwhile)."""
    aside = f"{held}.stale.{uuid.uuid4().hex[:8]}"
    try:
        os.rename(held, aside)
    except FileNotFoundError:
        return
    moved = _read_record_file(aside)
    if moved is not None and moved.get("token") != holder.get("token"):
        try:
            os.link(aside, held)  # fails if a third process holds it now: its verify() tells
        except OSError:
            pass
    os.remove(aside)


class MemoryStore:
    """Chunks kept in memory (``out_dir=None``): nothing to resume."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.chunks: dict[int, dict[str, np.ndarray]] = {}

    def get(self, c: int, key: str) -> dict[str, np.ndarray] | None:
        return self.chunks.get(c)

    def put(self, c: int, key: str, arrays: dict[str, np.ndarray]) -> None:
        self.chunks[c] = arrays

    def finish(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """All chunks, concatenated."""
        return {
            k: np.concatenate([self.chunks[c][k] for c in range(len(keys))]) for k in self.names
        }


class DiskStore:
    """Chunks in ``out_dir``, checked against their keys and checksums.

    Args:
      out_dir: the job's directory (created if missing).
      identity: the job's identity parts (see :func:`deepliftjax._identity.job_identity`).
      names: the arrays of a chunk (``contributions``, ``residuals``, ...).
      resume: reuse what ``out_dir`` holds; ``False`` deletes it first.
      writer: whether this process writes the manifest and clears old files (the first
        process of a distributed job; every process reads).

    Raises:
      DeepLiftError: ``out_dir`` is a file, or holds a job with another identity (the
        message names the parts that differ).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        identity: dict[str, str],
        names: Sequence[str],
        *,
        resume: bool = True,
        writer: bool = True,
    ):
        self.dir = os.fspath(out_dir)
        self.chunk_dir = os.path.join(self.dir, "chunks")
        self.names, self.identity = list(names), identity
        self._final: dict[str, Any] | None = None
        self._warned: set[str] = set()  # what this run has warned about (once each)
        self.from_final = False  # whether the last get() read the final files
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise error(
                f"out_dir {self.dir} is a file, not a directory.",
                "pass the path of a directory (it is created if missing).",
            )
        old = self._read_manifest() if resume else None
        if old is not None:
            self._check_identity(old)
            self._final = old.get("final")
        if writer:
            os.makedirs(self.chunk_dir, exist_ok=True)
            if not resume:
                self._clear()
            self._write_manifest(complete=False)

    # ---- manifest --------------------------------------------------------------------------
    def _read_manifest(self) -> dict | None:
        path = os.path.join(self.dir, MANIFEST)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError) as e:
            warnings.warn(
                f"{path} is unreadable ({e}); starting the job over in {self.dir}.", stacklevel=4
            )
            return None

    def _check_identity(self, old: dict) -> None:
        had = old.get("identity") or {"format": str(old.get("config", {}).get("format", "?"))}
        diff = [k for k in self.identity if had.get(k) != self.identity[k]]
        if diff:
            raise error(
                f"{self.dir} holds a different job (differs: {', '.join(diff)}); its scores "
                "are not reused.",
                "use another out_dir, or start over with resume=False (--no-resume on the "
                "command line), which deletes the old results.",
            )

    def _write_manifest(self, complete: bool, num_examples: int | None = None) -> None:
        data = {
            "format": FORMAT,
            "identity": self.identity,
            "complete": complete,
            "num_examples": num_examples,
            "files": [f"{k}.npy" for k in self.names],
            "final": self._final,
        }
        path = os.path.join(self.dir, MANIFEST)
        save_atomic(path, lambda fh: fh.write(json.dumps(data, indent=1).encode()))

    def _clear(self) -> None:
        """Delete the old job's files (not the lock, nor a live writer's temporary files)."""
        for f in os.listdir(self.chunk_dir):
            path = os.path.join(self.chunk_dir, f)
            if _TMP not in f or _orphaned(path):
                _remove(path)
        for f in [MANIFEST, *(f"{k}.npy" for k in self.names)]:
            _remove(os.path.join(self.dir, f))

    def _warn(self, what: str, message: str) -> None:
        """Warn about ``what`` once per run (a chunk is read more than once per run)."""
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, stacklevel=6)

    # ---- chunks ------------------------------------------------------------------------------
    def chunk_path(self, c: int) -> str:
        return os.path.join(self.chunk_dir, f"chunk_{c:06d}.npz")

    def _read_chunk(self, c: int, key: str) -> dict[str, np.ndarray] | None:
        """The chunk file's arrays if it holds chunk ``key`` intact; warns if damaged."""
        path = self.chunk_path(c)
        if not os.path.exists(path):
            return None
        try:
            with open(path, "rb") as fh, np.load(fh) as z:  # closed even when np.load fails
                arrays = {k: z[k] for k in z.files}
            stored_key, stored_sum = str(arrays.pop(_KEY)), str(arrays.pop(_SUM))
        except FileNotFoundError:  # replaced by its writer meanwhile: read it next time
            return None
        except Exception as e:  # noqa: BLE001 - truncated, not a zip, no key: all damaged
            self._warn(path, f"{path} is damaged ({type(e).__name__}); recomputing it.")
            return None
        if stored_key != key:
            return None  # another chunk's rows or another job: not this chunk, recompute
        if checksum(arrays) != stored_sum or set(arrays) != set(self.names):
            self._warn(path, f"{path} fails its checksum; recomputing it.")
            return None
        return arrays

    def _final_rows(self, c: int, key: str) -> dict[str, np.ndarray] | None:
        """Chunk ``c`` from the final files, if they hold it under ``key`` intact."""
        entries = (self._final or {}).get("chunks", [])
        if c >= len(entries) or entries[c]["key"] != key:
            return None
        lo, hi = entries[c]["rows"]
        arrays = {}
        for name in self.names:
            path = os.path.join(self.dir, f"{name}.npy")
            try:
                mm = np.load(path, mmap_mode="r")
                arrays[name] = np.array(mm[lo:hi])
                del mm
                if arrays[name].shape[0] != hi - lo:
                    raise ValueError("too few rows")
            except Exception as e:  # noqa: BLE001 - missing or truncated final file
                self._warn(
                    "final files",
                    f"{path} is missing or damaged ({type(e).__name__}); recomputing the "
                    "chunks it held.",
                )
                return None
        if checksum(arrays) != entries[c]["checksum"]:
            self._warn(
                f"final rows {c}",
                f"the rows of chunk {c} in the final files of {self.dir} fail their checksum; "
                "recomputing them.",
            )
            return None
        return arrays

    def get(self, c: int, key: str) -> dict[str, np.ndarray] | None:
        """Chunk ``c``'s arrays from its file or the final files; ``None`` if not stored."""
        arrays = self._read_chunk(c, key)
        self.from_final = arrays is None
        return arrays if arrays is not None else self._final_rows(c, key)

    def put(self, c: int, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write chunk ``c`` atomically with its key and checksum."""
        extra = {_KEY: np.array(key), _SUM: np.array(checksum(arrays))}
        save_atomic(self.chunk_path(c), lambda fh: np.savez(fh, **arrays, **extra))

    # ---- final files -------------------------------------------------------------------------
    def finish(self, keys: Sequence[str], keep_chunks: bool = False) -> dict[str, np.ndarray]:
        """Assemble the final files from the chunks and mark the job complete.

        One pass over the chunks streams each array into a temporary ``.npy`` created with
        :func:`numpy.lib.format.open_memmap` (rows written with plain file writes, so no
        page of it stays mapped); the files are then renamed into place and the manifest
        records every chunk's key, rows and checksum. Nothing is rewritten when the final
        files already hold every chunk.

        Raises:
          DeepLiftError: a chunk is missing (a process of a distributed job failed).
        """
        entries, all_final = self._entries(keys)
        if not all_final or (self._final or {}).get("chunks") != entries:
            total = entries[-1]["rows"][1]
            tmps = {k: self._open_tmp(k, keys, total) for k in self.names}
            try:
                for c, key in enumerate(keys):
                    arrays = self._need(c, key)
                    for name, (_, fh, offset, row_bytes) in tmps.items():
                        fh.seek(offset + entries[c]["rows"][0] * row_bytes)
                        fh.write(np.ascontiguousarray(arrays[name]).tobytes())
                for _, fh, _, _ in tmps.values():
                    fh.flush()
                    os.fsync(fh.fileno())
                    fh.close()
                for name, (path, _, _, _) in tmps.items():
                    os.replace(path, os.path.join(self.dir, f"{name}.npy"))
            finally:
                for path, fh, _, _ in tmps.values():
                    fh.close()
                    if os.path.exists(path):
                        os.remove(path)
            self._final = {"chunks": entries}
        self._write_manifest(complete=True, num_examples=entries[-1]["rows"][1])
        _remove_orphans(self.dir)  # left by processes killed while writing
        _remove_orphans(self.chunk_dir)
        if not keep_chunks:
            for f in os.listdir(self.chunk_dir):
                if _TMP not in f:
                    _remove(os.path.join(self.chunk_dir, f))
            try:
                os.rmdir(self.chunk_dir)
            except OSError:  # a live writer's temporary file is still there
                pass
        return self.load()

    def _need(self, c: int, key: str) -> dict[str, np.ndarray]:
        arrays = self.get(c, key)
        if arrays is None:
            raise error(
                f"chunk {c} of the job in {self.dir} is missing.",
                "rerun the same job: it computes only the missing chunks.",
            )
        return arrays

    def _entries(self, keys: Sequence[str]) -> tuple[list[dict], bool]:
        """Key, rows and checksum of every chunk (checking that each is stored), and
        whether the final files hold them all."""
        entries, lo, all_final = [], 0, True
        for c, key in enumerate(keys):
            arrays = self._need(c, key)
            all_final &= self.from_final
            n_rows = arrays["residuals"].shape[0]
            entries.append({"key": key, "rows": [lo, lo + n_rows], "checksum": checksum(arrays)})
            lo += n_rows
        return entries, all_final

    def _open_tmp(self, name: str, keys: Sequence[str], total: int):
        first = self._need(0, keys[0])[name]
        path = _tmp_path(os.path.join(self.dir, f"{name}.npy"))
        shape = (total, *first.shape[1:])
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=first.dtype, shape=shape)
        offset = mm.offset
        del mm
        return path, open(path, "r+b"), offset, first.dtype.itemsize * int(np.prod(shape[1:]))

    def load(self) -> dict[str, np.ndarray]:
        """The final files, memory-mapped."""
        return {k: np.load(os.path.join(self.dir, f"{k}.npy"), mmap_mode="r") for k in self.names}
