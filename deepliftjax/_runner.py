"""Batched attribution jobs: chunks, progress, devices, files, resume, many processes.

:func:`attribute` runs DeepLIFT (one reference) or DeepLIFT-SHAP (many) over a large set
of examples: ``jit(vmap(...))`` over fixed-size chunks (the last one padded, so one
compiled function serves every chunk), each chunk sharded over the local devices along
the batch axis with a :class:`jax.sharding.Mesh`. Its pieces: :func:`describe_inputs`
(what the inputs are), :func:`deepliftjax._batch_references.classify_references` (what the
references are), :func:`deepliftjax._identity.job_identity` (what determines the numbers),
:func:`chunk_function` (the compiled chunk), :mod:`deepliftjax._store` (chunks in memory
or on disk) and :class:`deepliftjax._shap.Tally` (residual and conditioning checks).

Resume is content-addressed: a job's identity is its traced computation (every equation,
parameter, literal and constant, through every nested jaxpr: weights inside ``jax.jit``,
``checkpoint``, ``scan`` or Flax's lifted transforms count), options, references and
library versions, and every chunk carries a key of its rows, so a rerun reuses exactly the
chunks whose inputs and settings are unchanged and never returns another job's scores.

One ``out_dir``, many callers: a job holds ``out_dir``'s lock (:class:`DirLock`) from
opening its store to returning its files; another call of the same job waits for it and
reuses its chunks, a call of another job stops at once with an error naming the holder.

Many processes: under :func:`jax.distributed.initialize`, :func:`attribute` runs
unchanged in every process; the processes first check that they hold the same job
(identities compared, a mismatch stops all of them with one error), then process ``p`` of
``P`` computes chunks ``c % P == p`` on its local devices, all write to the shared
``out_dir``, and process 0 (holding the lock) assembles the final files once the rows of
every process are found to agree (see :mod:`deepliftjax._distributed`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from deepliftjax._batch_references import ReferenceSpec, classify_references
from deepliftjax._checks import (
    CONDITIONING_THRESHOLD,
    ConditioningWarning,
    conditioning_message,
)
from deepliftjax._distributed import (
    Share,
    agree,
    agree_rows,
    barrier,
    raise_if_any,
    share,
)
from deepliftjax._errors import DeepLiftError, error
from deepliftjax._guard import check_options
from deepliftjax._identity import chunk_key, job_id, job_identity
from deepliftjax._progress import tqdm
from deepliftjax._shap import ShapScores, Tally, check_chunk_size, deeplift_shap
from deepliftjax._store import DirLock, DiskStore, MemoryStore

__all__ = ["attribute", "Attribution", "JobInterrupted"]

_GUARD_OPTIONS = ("check", "check_tolerance")  # settings of the summation guard


class Attribution(NamedTuple):
    """Results of :func:`attribute`; arrays (memory-mapped when written to disk).

    Attributes:
      contributions: ``(N, *example_shape)`` mean contributions over references.
      hypothetical: ``(N, *example_shape)`` hypothetical contributions, or ``None``.
      residuals: ``(N,)`` the absolute summation residual ``|sum(C) - Δf|`` (max over
        references), in the units of ``f``: not the relative residual of
        :func:`deepliftjax.summation_residual` and :func:`deepliftjax.summation_check`,
        which divides it by ``max(|Δf|, floor)``.
      conditioning: ``(N,)`` ``sum_k sum|C_k| / sum_k |Δf_k|`` over the references (floored
        as in :func:`deepliftjax.summation_check`; see :class:`ShapScores`): large values
        mean exact scores that cancel.
      projected: with ``hypothetical``, the present-base projection ``hypothetical * x``
        (one-hot ``x``): the hypothetical score of the base present, which equals the
        contributions summed over the alphabet (tangermeme's convention for logos and
        motif discovery); else ``None``.
    """

    contributions: Any
    hypothetical: Any
    residuals: Any
    conditioning: Any = None
    projected: Any = None


class JobInterrupted(KeyboardInterrupt):
    """A job stopped by Ctrl-C (a :class:`KeyboardInterrupt`); finished chunks are kept.

    Attributes:
      done: chunks finished (computed or found on disk) when it stopped.
      total: this process's chunks, or ``None`` when unknown (iterable inputs).
    """

    def __init__(self, done: int, total: int | None):
        super().__init__(f"interrupted after chunk {done}/{'?' if total is None else total}")
        self.done, self.total = done, total


class Inputs(NamedTuple):
    """What :func:`describe_inputs` found.

    Attributes:
      num: ``N``, or ``None`` for an iterable of batches.
      example_shape: the shape of one example.
      dtype: the inputs' dtype.
      x_dtype: the dtype computed in (``dtype`` if floating, else float32).
      array: the ``(N, ...)`` array, or ``None``.
      batches: the iterator of batches, or ``None``.
    """

    num: int | None
    example_shape: tuple[int, ...]
    dtype: np.dtype
    x_dtype: np.dtype
    array: Any
    batches: Iterator[Any] | None


def describe_inputs(inputs: Any) -> Inputs:
    """Read the shape and dtype of an ``(N, ...)`` array or an iterable of batches.

    Args:
      inputs: an array (NumPy memory maps are read chunk by chunk) or an iterable of
        ``(B, ...)`` batches (its first batch is read here).

    Returns:
      An :class:`Inputs`.

    Raises:
      DeepLiftError: no examples, a scalar batch, a non-numeric dtype or another type.
    """
    if hasattr(inputs, "shape") and hasattr(inputs, "dtype"):
        if np.ndim(inputs) < 1 or inputs.shape[0] == 0:
            raise error(
                f"inputs must be a non-empty (N, ...) array, got shape {inputs.shape}.",
                "stack at least one example on axis 0 (x[None] for a single example).",
            )
        num, shape, dtype, batches = int(inputs.shape[0]), inputs.shape[1:], inputs.dtype, None
    elif isinstance(inputs, Iterable):
        batches = iter(inputs)
        try:
            first = np.asarray(next(batches))
        except StopIteration:
            raise error(
                "inputs is an empty iterable.",
                "pass an (N, ...) array or an iterable that yields at least one (B, ...) batch.",
            ) from None
        if first.ndim < 1:
            raise error(
                f"each batch must be (B, ...), got shape {first.shape}.",
                "yield batches with the examples stacked on axis 0.",
            )
        num, shape, dtype, batches = None, first.shape[1:], first.dtype, _chain(first, batches)
    else:
        raise error(
            f"inputs must be an array or an iterable of arrays, got {type(inputs)}.",
            "pass an (N, *example_shape) array (a NumPy memory map is fine) or an iterable "
            "of (B, *example_shape) batches.",
        )
    dtype = np.dtype(dtype)
    if not (
        np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or dtype == np.bool_
    ):
        raise error(
            f"inputs must be numeric (float, int or bool), got dtype {dtype}.",
            "convert the inputs to a float array, e.g. inputs.astype(np.float32).",
        )
    x_dtype = dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float32)
    array = inputs if batches is None else None
    return Inputs(num, tuple(shape), dtype, x_dtype, array, batches)


def _chunks(spec: Inputs, size: int) -> Iterator[tuple[int, np.ndarray]]:
    if spec.batches is None:
        for c in range(-(-spec.num // size)):
            yield c, np.asarray(spec.array[c * size : (c + 1) * size])
    else:
        yield from enumerate(_rechunk(spec.batches, size))


def _chain(first, rest):
    yield first
    yield from rest


def _scalar_fn(fn: Callable, target: Any, out_size: int) -> Callable:
    """fn(x) -> scalar, selecting the target output (t is a per-example index or None)."""

    def scalar(x, t):
        y = fn(x)
        if callable(target):
            return jnp.asarray(target(y)).reshape(())
        y = jnp.reshape(y, (-1,))
        if t is None:
            return y[0] if target is None else y[target]
        return jnp.sum(y * jax.nn.one_hot(t, out_size, dtype=y.dtype))

    return scalar


def _check_target(fn: Callable, example: jax.ShapeDtypeStruct, target: Any, n: int | None):
    try:
        out = jax.eval_shape(fn, example)
    except Exception as e:  # noqa: BLE001 - report what failed and on what
        raise error(
            f"the model failed on one example of shape {example.shape} and dtype "
            f"{example.dtype}: {type(e).__name__}: {e}",
            "fn runs on ONE example (inputs[i]), not a batch: wrap a batched model, e.g. "
            "lambda x: model(x[None])[0], and check it runs on inputs[0].",
        ) from e
    if not hasattr(out, "shape"):
        raise error(
            f"the model must return one array per example, got {type(out).__name__}.",
            "return the output to attribute (or pass target= as a function of it).",
        )
    size = int(np.prod(out.shape))
    if callable(target):
        t_out = jax.eval_shape(target, out)
        if getattr(t_out, "shape", None) not in ((), (1,)):
            raise error(
                f"target(output) must return a scalar, got {t_out}.",
                "select one value, e.g. target=lambda y: y[3] or lambda y: y[3] - y[5].",
            )
    elif target is None:
        if size != 1:
            raise error(
                f"the model returns shape {out.shape} per example, not a scalar.",
                f"pass target=INDEX (0..{size - 1}; --target on the command line) to choose "
                "the output to attribute.",
            )
    elif np.ndim(target) == 0:
        if not isinstance(target, int | np.integer) or not 0 <= int(target) < size:
            raise error(
                f"target={target!r} is not an output index: the model returns shape "
                f"{out.shape} per example.",
                f"pass an int in [0, {size}) (the flattened output), an (N,) int array or a "
                "function of the output.",
            )
    else:
        t = np.asarray(target)
        if n is None or t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
            raise error(
                f"a per-example target must be an int array of shape ({n},), got "
                f"{t.dtype} {t.shape}.",
                "pass one output index per example (np.asarray(targets, int)), or one int.",
            )
        if t.size and (t.min() < 0 or t.max() >= size):
            raise error(
                f"target values must lie in [0, {size}) (model output shape {out.shape}); "
                f"got range [{t.min()}, {t.max()}].",
                "index the flattened output of one example.",
            )
    return size


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    a = np.asarray(a)
    if a.shape[0] == size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)], axis=0)


def chunk_function(
    scalar: Callable,
    refs: ReferenceSpec,
    key: jax.Array,
    per_target: bool,
    x_dtype: np.dtype,
    devices: list[jax.Device],
    chunk_size: int,
    shap_options: dict[str, Any],
) -> Callable[..., ShapScores]:
    """The compiled chunk: ``run(c, xs, ref_rows, target_rows) -> ShapScores`` (async).

    ``xs`` (and the per-example rows, or ``None``) are padded to ``chunk_size`` and sharded
    over ``devices`` along the batch axis; generated references are drawn with
    ``fold_in(key, example_index)``, so they do not depend on the chunking.
    """
    mesh = Mesh(np.asarray(devices), ("batch",))
    batch_sh, repl_sh = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())

    def one(x, r, t, idx):
        if refs.kind == "generator":
            r, k = refs.generator, jax.random.fold_in(key, idx)
        else:
            r, k = r.astype(x_dtype), None
        f = lambda xx: scalar(xx, t)
        opts = dict(return_residuals=True, return_conditioning=True, **shap_options)
        return deeplift_shap(f, r, key=k, **opts)(x.astype(x_dtype))

    axes = (0, 0 if refs.kind == "per_example" else None, 0 if per_target else None, 0)
    # Arguments arrive committed to their shardings (device_put below); jit follows them.
    compiled = jax.jit(jax.vmap(one, in_axes=axes), out_shardings=batch_sh)
    shared = None if refs.shared is None else jax.device_put(refs.shared, repl_sh)

    def put(a):
        return None if a is None else jax.device_put(_pad(a, chunk_size), batch_sh)

    def run(c: int, xs: np.ndarray, ref_rows: Any, target_rows: Any) -> ShapScores:
        idx = np.arange(c * chunk_size, (c + 1) * chunk_size, dtype=np.int32)
        r = put(ref_rows) if refs.kind == "per_example" else shared
        return compiled(put(xs), r, put(target_rows), put(idx))

    return run


class _Progress:
    """A tqdm bar over examples whose rate counts computed chunks only."""

    def __init__(self, total: int | None, enabled: bool):
        self.bar = tqdm(total=total, unit="ex", desc="deeplift", disable=not enabled, smoothing=0.1)

    def skip(self, rows: int) -> None:
        """Rows found on disk or left to other processes: counted, but not in the rate."""
        bar = self.bar
        bar.n += rows
        if bar.disable:
            return
        bar.last_print_n += rows  # the moving average only sees rows passed to update()
        bar.initial += rows  # and the overall rate is (n - initial) / elapsed
        bar.refresh()

    def done(self, rows: int) -> None:
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()


class _Checks:
    """The residual and conditioning tallies of a job, and their warnings."""

    def __init__(self, residual: float | None, conditioning: float | None, where: str):
        self.residuals = Tally(residual)
        self.conditioning = Tally(conditioning, nan_exceeds=False)
        self.where = where

    def add(self, arrays: dict[str, np.ndarray], offset: int) -> None:
        self.residuals.add(arrays["residuals"], offset)
        self.conditioning.add(arrays["conditioning"], offset)

    def warn(self) -> None:
        if self.residuals.count:
            warnings.warn(self.where + self.residuals.residual_message(), stacklevel=3)
        c = self.conditioning
        if c.count:
            message = conditioning_message(c.count, c.worst, c.where, c.threshold)
            warnings.warn(self.where + message, ConditioningWarning, stacklevel=3)


def _rechunk(batches: Iterable[Any], size: int) -> Iterator[np.ndarray]:
    buf: list[np.ndarray] = []
    have = 0
    for b in batches:
        b = np.asarray(b)
        buf.append(b)
        have += b.shape[0]
        while have >= size:
            cat = np.concatenate(buf, axis=0)
            yield cat[:size]
            buf, have = [cat[size:]], have - size
    if have:
        yield np.concatenate(buf, axis=0)


def attribute(
    fn: Callable[[jax.Array], Any],
    inputs: Any,
    references: Any = None,
    *,
    target: Any = None,
    key: jax.Array | None = None,
    reference_layout: str | None = None,
    chunk_size: int = 256,
    reference_chunk_size: int | None = 10,
    hypothetical: bool = False,
    alphabet_axis: int = -1,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    keep_chunks: bool = False,
    devices: list[jax.Device] | None = None,
    progress: bool = True,
    residual_threshold: float | None = 1e-3,
    conditioning_threshold: float | None = CONDITIONING_THRESHOLD,
    callback: Callable[[int, Attribution], None] | None = None,
    check: str | None = "warn",
    **deeplift_options: Any,
) -> Attribution:
    """Attribute many examples in chunks, on all local devices, to memory or disk.

    Args:
      fn: the model on ONE example: ``fn(x) -> output`` (scalar, or an array from which
        ``target`` picks one value). E.g. ``lambda x: model.apply(params, x[None])[0]``.
      inputs: ``(N, *example_shape)`` array (NumPy memory maps are read chunk by chunk),
        or an iterable of such batches (any sizes; rechunked).
      references: ``None`` (one all-zero reference); one reference ``example_shape``;
        ``(K, *example_shape)`` shared by all examples; ``(N, K, *example_shape)`` or
        ``(N, *example_shape)`` per example (array inputs only; row i belongs to example
        i); or a generator ``(key, x) -> (K, *example_shape)`` such as
        ``functools.partial(dinuc_shuffle, num_shuffles=20)``, drawn on device with
        ``fold_in(key, example_index)`` (reproducible whatever the chunking).
      target: ``None`` (``fn`` returns one value), an output index, an ``(N,)`` int array
        of per-example indices, or a function ``output -> scalar``.
      key: PRNG key for a reference generator (default ``jax.random.key(0)``).
      reference_layout: ``"shared"`` or ``"per_example"`` for a ``(K, ...)`` array whose
        ``K`` equals ``N`` (ambiguous: an error without it); ``None`` reads the layout
        from the shape.
      chunk_size: examples per compiled call (rounded up to a multiple of the number of
        devices). Memory grows with ``chunk_size * reference_chunk_size``.
      reference_chunk_size: references per step of the scan over references.
      hypothetical: also compute hypothetical contributions (one-hot inputs) and their
        present-base projection.
      alphabet_axis: the one-hot axis of an example, for ``hypothetical``.
      out_dir: write ``chunks/chunk_XXXXXX.npz`` as chunks finish (each with its key and
        a checksum), then ``contributions.npy`` (+ ``hypothetical.npy``, ``projected.npy``),
        ``residuals.npy`` and ``conditioning.npy``, and a ``manifest.json`` holding the
        job's identity. ``None`` keeps results in memory. While the job runs it holds
        ``out_dir/lock``: another call of the same job waits and then reuses the chunks,
        a call of a different job raises at once naming the holder's host and pid.
      resume: reuse the chunks in ``out_dir`` whose key matches (same job, same rows):
        an edited row recomputes its chunk only, a damaged chunk is recomputed with one
        warning, and a different job (model structure, weights anywhere in the traced
        computation, options, references, versions) is refused. ``False`` deletes
        ``out_dir``'s results and starts over.
      keep_chunks: keep the per-chunk files after the final files are written.
      devices: devices to shard each chunk over (default ``jax.local_devices()``).
      progress: show a tqdm progress bar (its rate counts computed chunks only).
      residual_threshold: warn about examples whose absolute summation residual
        ``|sum(C) - Δf|`` exceeds it (``None``: no check).
      conditioning_threshold: warn (:class:`~deepliftjax._checks.ConditioningWarning`)
        about examples whose conditioning ``sum|C| / |Δf|`` exceeds it: exact scores
        that cancel, as at a reference where a normalisation layer sees zero variance
        (``None``: no check).
      callback: ``callback(chunk_index, Attribution)`` after each computed chunk is stored
        (for monitoring; an exception stops the job, finished chunks stay on disk).
      check: the summation guard of every DeepLIFT call (see :func:`deepliftjax.deeplift`):
        ``"warn"`` (default), ``"raise"`` (the job stops at the first chunk that misses
        summation to delta; finished chunks stay on disk) or ``None``. It never changes the
        scores, so it is not part of the job's identity.
      **deeplift_options: passed to :func:`deepliftjax.deeplift_vjp`.

    Under :func:`jax.distributed.initialize` with ``P`` processes, call it unchanged in
    every process with the same arguments and an ``out_dir`` they share: the processes
    first compare their job identities (a difference stops every process with the same
    error), process ``p`` computes chunks ``c % P == p``, process 0 assembles the final
    files once every process's rows agree, and every process returns them. A rerun of all
    processes recomputes only missing chunks.

    Returns:
      An :class:`Attribution`; arrays are memory-mapped from ``out_dir`` when given.

    Raises:
      DeepLiftError: (a ``ValueError``) inputs, references or target of the wrong shape
        or dtype, ambiguous references, no inputs or no references, ``chunk_size`` or
        ``reference_chunk_size`` below 1, no devices, a model output the target does not
        fit, an ``out_dir`` holding a different job, locked by a different job, or that is
        a file, several processes without ``out_dir`` or holding different jobs, or a model
        parameter whose content cannot be identified (then pass ``out_dir=None``).
      JobInterrupted: Ctrl-C (a ``KeyboardInterrupt`` saying how many chunks finished).

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> w = jnp.arange(8.0).reshape(4, 2)
      >>> res = attribute(lambda x: jnp.sum(jnp.tanh(x @ w)), np.ones((10, 4), np.float32),
      ...                 np.zeros((3, 4), np.float32), chunk_size=4, progress=False)
      >>> res.contributions.shape, res.residuals.shape, res.conditioning.shape
      ((10, 4), (10,), (10,))
    """
    devices, chunk_size = _devices(devices, chunk_size, reference_chunk_size)
    check_options(check, deeplift_options.get("check_tolerance"))
    spec = describe_inputs(inputs)
    refs = classify_references(
        references, spec.example_shape, spec.num, spec.x_dtype, reference_layout
    )
    targets, scalar = _target(fn, target, spec)
    key = jax.random.key(0) if key is None else key
    shap_options = dict(
        reference_chunk_size=reference_chunk_size,
        hypothetical=hypothetical,
        alphabet_axis=alphabet_axis,
        **deeplift_options,
    )
    example = jax.ShapeDtypeStruct(spec.example_shape, spec.x_dtype)
    identity = {}  # in memory nothing is resumed: no identity, no chunk keys
    if out_dir is not None:  # the guard's settings never change the scores
        numbers = {k: v for k, v in shap_options.items() if k not in _GUARD_OPTIONS}
        identity = job_identity(
            scalar, example, spec.dtype, targets is not None, refs, key, chunk_size, numbers
        )
    shap_options["check"] = check
    job, me = job_id(identity), share()
    if out_dir is not None and me.count > 1:
        agree(identity)  # every process, before anything is written
    names = ["contributions", "residuals", "conditioning"] + (
        ["hypothetical", "projected"] if hypothetical else []
    )
    store, lock = _open_store(out_dir, identity, names, resume, me, job, progress)
    try:
        run = chunk_function(
            scalar, refs, key, targets is not None, spec.x_dtype, devices, chunk_size, shap_options
        )
        checks = _Checks(
            residual_threshold,
            conditioning_threshold,
            "" if out_dir is None else f"in {out_dir}: ",
        )

        def rows(lo: int, hi: int) -> tuple[Any, Any]:
            ref_rows = refs.rows(lo, hi) if refs.kind == "per_example" else None
            return ref_rows, None if targets is None else targets[lo:hi]

        bar = _Progress(spec.num, progress)
        try:
            keys = _run_chunks(spec, chunk_size, rows, job, me, store, run, checks, bar, callback)
        finally:
            bar.close()
        checks.warn()
        arrays = _finish(store, keys, me, job, keep_chunks, lock, chunk_size)
    finally:
        if lock is not None:
            lock.release()
    return Attribution(
        arrays["contributions"],
        arrays.get("hypothetical"),
        arrays["residuals"],
        arrays["conditioning"],
        arrays.get("projected"),
    )


def _devices(devices, chunk_size: int, reference_chunk_size) -> tuple[list, int]:
    """Checked devices and sizes; the chunk size rounded up to a multiple of the devices."""
    check_chunk_size("chunk_size", chunk_size)
    check_chunk_size("reference_chunk_size", reference_chunk_size, allow_none=True)
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise error(
            "devices is an empty list.",
            "pass devices=None (all local devices) or a non-empty list such as jax.devices()[:1].",
        )
    return devices, -(-chunk_size // len(devices)) * len(devices)


def _target(fn: Callable, target: Any, spec: Inputs) -> tuple[np.ndarray | None, Callable]:
    """Per-example targets (or ``None``) and ``scalar(x, t)``, the value to attribute."""
    per_target = target is not None and not callable(target) and np.ndim(target) > 0
    if per_target and spec.num is None:
        raise error(
            "a per-example target array needs array inputs, not an iterable.",
            "pass the inputs as one (N, ...) array (a NumPy memory map is fine).",
        )
    example = jax.ShapeDtypeStruct(spec.example_shape, spec.x_dtype)
    out_size = _check_target(fn, example, target, spec.num)
    targets = np.asarray(target, np.int32) if per_target else None
    return targets, _scalar_fn(fn, None if per_target else target, out_size)


def _notify(progress: bool) -> Callable[[str], None] | None:
    """Where a job says it waits for ``out_dir`` (stderr, with the progress bar)."""
    if not progress:
        return None
    return lambda message: print(f"deeplift: {message}", file=sys.stderr, flush=True)


def _open_store(
    out_dir, identity: dict, names: list[str], resume: bool, me: Share, job: str, progress: bool
) -> tuple[MemoryStore | DiskStore, DirLock | None]:
    """The job's chunk store and ``out_dir``'s lock (held by the first process).

    The first process takes the lock (waiting while the same job holds it), checks the
    manifest and writes its own; the others open the store after it, and every process
    raises the first process's error, if it had one.
    """
    if out_dir is None:
        if me.count > 1:
            raise error(
                f"{me.count} processes (jax.distributed) need an out_dir they all share.",
                "pass out_dir= a directory on a file system every process can reach.",
            )
        return MemoryStore(names), None
    out_dir = os.fspath(out_dir)
    lock, store, failed = None, None, None
    if me.writer:
        try:
            if os.path.exists(out_dir) and not os.path.isdir(out_dir):
                raise error(
                    f"out_dir {out_dir} is a file, not a directory.",
                    "pass the path of a directory (it is created if missing).",
                )
            try:
                os.makedirs(out_dir, exist_ok=True)
                lock = DirLock(out_dir, job, _notify(progress)).acquire()
                store = DiskStore(out_dir, identity, names, resume=resume, writer=True)
            except OSError as e:
                raise error(
                    f"cannot use out_dir {out_dir}: {e}.", "pass a writable directory."
                ) from e
        except BaseException as e:
            if lock is not None:
                lock.release()
                lock = None
            if me.count == 1 or not isinstance(e, DeepLiftError):
                raise
            failed = str(e)
    if me.count > 1:
        try:
            raise_if_any("opened", failed)  # the first process has cleared and written
            if not me.writer:
                store = DiskStore(out_dir, identity, names, resume=resume, writer=False)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    return store, lock


def _run_chunks(spec, chunk_size, rows, job, me, store, run, checks, bar, callback) -> list[str]:
    """Compute this process's missing chunks (dispatching one while storing the last);
    return every chunk's key."""
    keys: list[str] = []
    pending, done = None, 0
    total = None if spec.num is None else len(range(me.index, -(-spec.num // chunk_size), me.count))

    def finish(c: int, key: str, lo: int, xs: np.ndarray, out: ShapScores) -> None:
        valid = xs.shape[0]
        arrays = {k: np.asarray(getattr(out, k))[:valid] for k in store.names if k != "projected"}
        if "projected" in store.names:  # the present base's hypothetical score
            arrays["projected"] = arrays["hypothetical"] * np.asarray(
                xs, arrays["hypothetical"].dtype
            )
        store.put(c, key, arrays)
        checks.add(arrays, lo)
        bar.done(valid)
        if callback is not None:
            callback(c, Attribution(*(arrays.get(k) for k in Attribution._fields)))

    try:
        for c, xs in _chunks(spec, chunk_size):
            lo, valid = c * chunk_size, xs.shape[0]
            extra = rows(lo, lo + valid)
            keys.append(chunk_key(job, c, xs, *extra) if isinstance(store, DiskStore) else "")
            if not me.owns(c):
                bar.skip(valid)
                continue
            arrays = store.get(c, keys[-1])
            if arrays is not None:
                checks.add(arrays, lo)
                bar.skip(valid)
                done += 1
                continue
            launched = (c, keys[-1], lo, xs, run(c, xs, *extra))  # async dispatch
            if pending is not None:
                finish(*pending)
                done += 1
            pending = launched
        if pending is not None:
            finish(*pending)
    except KeyboardInterrupt as e:
        raise JobInterrupted(done, total) from e
    if not keys:
        raise error(
            "inputs yielded no examples (every batch was empty).",
            "pass at least one example; check the iterable of batches.",
        )
    return keys


def _finish(
    store, keys: list[str], me: Share, job: str, keep_chunks: bool, lock, chunk_size: int
) -> dict:
    """The final arrays: assembled by the first process once every process is done and
    holds the same rows."""
    if isinstance(store, MemoryStore):
        return store.finish(keys)
    agree_rows(keys, chunk_size)  # and a barrier: every process has stored its chunks
    if me.writer:
        lock.verify()
        arrays = store.finish(keys, keep_chunks=keep_chunks)
    barrier(job, "assembled")
    if not me.writer:
        arrays = store.load()
    barrier(job, "loaded")  # the first process keeps the lock until every process has its files
    return arrays
