"""Where a batch job's chunks live: in memory, or on disk with checksums and resume.

On disk, ``out_dir`` holds ``manifest.json`` (the job's identity and, once assembled, the
key and checksum of every chunk in the final files), ``chunks/chunk_XXXXXX.npz`` (each
with its chunk key and a checksum of its arrays) and the final files
(``contributions.npy``, ...). Every file is written atomically: a temporary file,
``fsync``, ``os.replace``. A chunk can be served by its chunk file or by the rows of the
final files; either must carry the chunk's current key and a matching checksum, so a
stale, truncated or corrupt chunk is recomputed (with a warning when it is damaged), and
scores of another job or of other rows are never returned.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deepliftjax._errors import DeepLiftError
from deepliftjax._jobs import FORMAT, array_digest

__all__ = ["MemoryStore", "DiskStore", "save_atomic", "checksum"]

MANIFEST = "manifest.json"
_KEY, _SUM = "__chunk_key__", "__checksum__"


def save_atomic(path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(fh)`` on a unique temporary file, fsync, rename."""
    tmp = f"{path}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
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
      identity: the job's identity parts (see :func:`deepliftjax._jobs.job_identity`).
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
        self._warned_final = False
        self.from_final = False  # whether the last get() read the final files
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise DeepLiftError(
                f"out_dir {self.dir} is a file, not a directory.\n"
                "Hint: pass the path of a directory (it is created if missing)."
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
            raise DeepLiftError(
                f"{self.dir} holds a different job (differs: {', '.join(diff)}); its scores "
                "are not reused.\nHint: use another out_dir, or start over with resume=False "
                "(--no-resume on the command line), which deletes the old results."
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
        for f in os.listdir(self.chunk_dir):
            os.remove(os.path.join(self.chunk_dir, f))
        for f in [MANIFEST, *(f"{k}.npy" for k in self.names)]:
            if os.path.exists(os.path.join(self.dir, f)):
                os.remove(os.path.join(self.dir, f))

    # ---- chunks ------------------------------------------------------------------------------
    def chunk_path(self, c: int) -> str:
        return os.path.join(self.chunk_dir, f"chunk_{c:06d}.npz")

    def _read_chunk(self, c: int, key: str) -> dict[str, np.ndarray] | None:
        """The chunk file's arrays if it holds chunk ``key`` intact; warns if damaged."""
        path = self.chunk_path(c)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            stored_key, stored_sum = str(arrays.pop(_KEY)), str(arrays.pop(_SUM))
        except Exception as e:  # noqa: BLE001 - truncated, not a zip, no key: all damaged
            warnings.warn(f"{path} is damaged ({type(e).__name__}); recomputing it.", stacklevel=5)
            return None
        if stored_key != key:
            return None  # another chunk's rows or another job: not this chunk, recompute
        if checksum(arrays) != stored_sum or set(arrays) != set(self.names):
            warnings.warn(f"{path} fails its checksum; recomputing it.", stacklevel=5)
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
                if not self._warned_final:
                    warnings.warn(
                        f"{path} is missing or damaged ({type(e).__name__}); recomputing the "
                        "chunks it held.",
                        stacklevel=5,
                    )
                self._warned_final = True
                return None
        if checksum(arrays) != entries[c]["checksum"]:
            warnings.warn(
                f"the rows of chunk {c} in the final files of {self.dir} fail their checksum; "
                "recomputing them.",
                stacklevel=5,
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
        for f in os.listdir(self.dir):  # left by a process killed while writing
            if ".tmp." in f:
                os.remove(os.path.join(self.dir, f))
        for f in os.listdir(self.chunk_dir):
            if not keep_chunks or ".tmp." in f:
                os.remove(os.path.join(self.chunk_dir, f))
        if not keep_chunks:
            os.rmdir(self.chunk_dir)
        return self.load()

    def _need(self, c: int, key: str) -> dict[str, np.ndarray]:
        arrays = self.get(c, key)
        if arrays is None:
            raise DeepLiftError(
                f"chunk {c} of the job in {self.dir} is missing.\nHint: rerun the same job: "
                "it computes only the missing chunks."
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
        path = os.path.join(self.dir, f"{name}.npy.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        shape = (total, *first.shape[1:])
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=first.dtype, shape=shape)
        offset = mm.offset
        del mm
        return path, open(path, "r+b"), offset, first.dtype.itemsize * int(np.prod(shape[1:]))

    def load(self) -> dict[str, np.ndarray]:
        """The final files, memory-mapped."""
        return {k: np.load(os.path.join(self.dir, f"{k}.npy"), mmap_mode="r") for k in self.names}
