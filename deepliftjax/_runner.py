"""Batched attribution jobs: chunks, progress, devices, files, resume.

:func:`attribute` runs DeepLIFT (one reference) or DeepLIFT-SHAP (many) over a large
set of examples: ``jit(vmap(...))`` over fixed-size chunks (the last one padded, so one
compiled function serves every chunk), each chunk sharded over all local devices along
the batch axis with a :class:`jax.sharding.Mesh`, results written chunk by chunk, and a
rerun on the same ``out_dir`` skipping every finished chunk.

Many hosts: examples are independent, so no cross-host communication is needed. Call
:func:`jax.distributed.initialize` on every host, then give each host its own slice and
directory, e.g. ``attribute(fn, x[jax.process_index()::jax.process_count()], ...,
out_dir=f"out/host{jax.process_index()}")``; each host shards its chunks over its own
``jax.local_devices()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from deepliftjax._checks import (
    CONDITIONING_THRESHOLD,
    ConditioningWarning,
    conditioning_message,
)
from deepliftjax._references import ShapScores, _error, check_chunk_size, deeplift_shap

__all__ = ["attribute", "Attribution"]

_MANIFEST = "manifest.json"
_FORMAT = 1


class Attribution(NamedTuple):
    """Results of :func:`attribute`; arrays (memory-mapped when written to disk).

    Attributes:
      contributions: ``(N, *example_shape)`` mean contributions over references.
      hypothetical: ``(N, *example_shape)`` hypothetical contributions, or ``None``.
      residuals: ``(N,)`` max over references of the absolute summation residual.
      conditioning: ``(N,)`` ``sum_k sum|C_k| / sum_k |Δf_k|`` over the references (floored
        as in :func:`deepliftjax.summation_check`; see :class:`ShapScores`): large values
        mean exact scores that cancel. ``None`` for a job finished by a version without
        it (NaN for the chunks it wrote).
    """

    contributions: Any
    hypothetical: Any
    residuals: Any
    conditioning: Any = None


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
        raise _error(
            f"the model failed on one example of shape {example.shape} and dtype "
            f"{example.dtype}: {type(e).__name__}: {e}",
            "fn runs on ONE example (inputs[i]), not a batch: wrap a batched model, e.g. "
            "lambda x: model(x[None])[0], and check it runs on inputs[0].",
        ) from e
    if not hasattr(out, "shape"):
        raise _error(
            f"the model must return one array per example, got {type(out).__name__}.",
            "return the output to attribute (or pass target= as a function of it).",
        )
    size = int(np.prod(out.shape))
    if callable(target):
        t_out = jax.eval_shape(target, out)
        if getattr(t_out, "shape", None) not in ((), (1,)):
            raise _error(
                f"target(output) must return a scalar, got {t_out}.",
                "select one value, e.g. target=lambda y: y[3] or lambda y: y[3] - y[5].",
            )
    elif target is None:
        if size != 1:
            raise _error(
                f"the model returns shape {out.shape} per example, not a scalar.",
                f"pass target=INDEX (0..{size - 1}; --target on the command line) to choose "
                "the output to attribute.",
            )
    elif np.ndim(target) == 0:
        if not isinstance(target, int | np.integer) or not 0 <= int(target) < size:
            raise _error(
                f"target={target!r} is not an output index: the model returns shape "
                f"{out.shape} per example.",
                f"pass an int in [0, {size}) (the flattened output), an (N,) int array or a "
                "function of the output.",
            )
    else:
        t = np.asarray(target)
        if n is None or t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
            raise _error(
                f"a per-example target must be an int array of shape ({n},), got "
                f"{t.dtype} {t.shape}.",
                "pass one output index per example (np.asarray(targets, int)), or one int.",
            )
        if t.size and (t.min() < 0 or t.max() >= size):
            raise _error(
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


def _fingerprint_array(x: Any) -> str:
    h = hashlib.sha1()
    h.update(str((np.shape(x), np.asarray(x[:1]).dtype.str)).encode())
    for row in (x[:1], x[-1:], x[len(x) // 2 : len(x) // 2 + 1]):
        h.update(np.ascontiguousarray(np.asarray(row)).tobytes())
    return h.hexdigest()


def _save_atomic(path: str, write: Callable[[Any], None]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_npy_streaming(path: str, parts: Iterable[np.ndarray], shape, dtype) -> None:
    """Write an .npy file from consecutive row blocks without holding it in memory."""

    def write(fh):
        np.lib.format.write_array_header_2_0(
            fh,
            {
                "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                "fortran_order": False,
                "shape": tuple(shape),
            },
        )
        for p in parts:
            fh.write(np.ascontiguousarray(p, dtype=dtype).tobytes())

    _save_atomic(path, write)


def attribute(
    fn: Callable[[jax.Array], Any],
    inputs: Any,
    references: Any = None,
    *,
    target: Any = None,
    key: jax.Array | None = None,
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
    **deeplift_options: Any,
) -> Attribution:
    """Attribute many examples in chunks, on all local devices, to memory or disk.

    Args:
      fn: the model on ONE example: ``fn(x) -> output`` (scalar, or an array from which
        ``target`` picks one value). E.g. ``lambda x: model.apply(params, x[None])[0]``.
      inputs: ``(N, *example_shape)`` array (NumPy memory maps are read chunk by chunk),
        or an iterable of such batches (any sizes; rechunked).
      references: ``None`` (one all-zero reference); one reference ``example_shape``;
        ``(K, *example_shape)`` shared by all examples; ``(N, K, *example_shape)`` per
        example (array inputs only); or a generator ``(key, x) -> (K, *example_shape)``
        such as ``functools.partial(dinuc_shuffle, num_shuffles=20)``, drawn on device
        with ``fold_in(key, example_index)`` (reproducible whatever the chunking).
      target: ``None`` (``fn`` returns one value), an output index, an ``(N,)`` int array
        of per-example indices, or a function ``output -> scalar``.
      key: PRNG key for a reference generator (default ``jax.random.key(0)``).
      chunk_size: examples per compiled call (rounded up to a multiple of the number of
        devices). Memory grows with ``chunk_size * reference_chunk_size``.
      reference_chunk_size: references per step of the scan over references.
      hypothetical: also compute hypothetical contributions (one-hot inputs).
      alphabet_axis: the one-hot axis of an example, for ``hypothetical``.
      out_dir: write ``chunks/chunk_XXXXXX.npz`` as chunks finish, then
        ``contributions.npy`` (+ ``hypothetical.npy``), ``residuals.npy`` and
        ``conditioning.npy``, and a ``manifest.json``. ``None`` keeps results in memory.
      resume: reuse finished chunks found in ``out_dir`` (the job's settings must match
        the manifest); ``False`` starts over.
      keep_chunks: keep the per-chunk files after the final files are written.
      devices: devices to shard each chunk over (default ``jax.local_devices()``).
      progress: show a tqdm progress bar.
      residual_threshold: warn about examples whose summation residual exceeds it
        (``None``: no check).
      conditioning_threshold: warn (:class:`~deepliftjax._checks.ConditioningWarning`)
        about examples whose conditioning ``sum|C| / |Δf|`` exceeds it: exact scores
        that cancel, as at a reference where a normalisation layer sees zero variance
        (``None``: no check).
      callback: ``callback(chunk_index, Attribution)`` after each chunk is stored (for
        monitoring; an exception stops the job, finished chunks stay on disk).
      **deeplift_options: passed to :func:`deepliftjax.deeplift_vjp`.

    Returns:
      An :class:`Attribution`; arrays are memory-mapped from ``out_dir`` when given.

    Raises:
      DeepLiftError: (a ``ValueError``) inputs, references or target of the wrong shape
        or dtype, no inputs or no references, ``chunk_size`` or ``reference_chunk_size``
        below 1, no devices, a model output the target does not fit, or an ``out_dir``
        holding a different job.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> w = jnp.arange(8.0).reshape(4, 2)
      >>> res = attribute(lambda x: jnp.sum(jnp.tanh(x @ w)), np.ones((10, 4), np.float32),
      ...                 np.zeros((3, 4), np.float32), chunk_size=4, progress=False)
      >>> res.contributions.shape, res.residuals.shape, res.conditioning.shape
      ((10, 4), (10,), (10,))
    """
    check_chunk_size("chunk_size", chunk_size)
    check_chunk_size("reference_chunk_size", reference_chunk_size, allow_none=True)
    devices = list(devices) if devices is not None else jax.local_devices()
    n_dev = len(devices)
    if n_dev == 0:
        raise _error(
            "devices is an empty list.",
            "pass devices=None (all local devices) or a non-empty list such as jax.devices()[:1].",
        )
    chunk_size = -(-chunk_size // n_dev) * n_dev
    key = jax.random.key(0) if key is None else key

    # ---- inputs ------------------------------------------------------------------------
    if hasattr(inputs, "shape") and hasattr(inputs, "dtype"):
        if np.ndim(inputs) < 1 or inputs.shape[0] == 0:
            raise _error(
                f"inputs must be a non-empty (N, ...) array, got shape {inputs.shape}.",
                "stack at least one example on axis 0 (x[None] for a single example).",
            )
        n: int | None = int(inputs.shape[0])
        ex_shape = tuple(inputs.shape[1:])
        in_dtype = np.dtype(inputs.dtype)
        batches: Iterable[Any] | None = None
    elif isinstance(inputs, Iterable):
        batches = iter(inputs)
        try:
            first = np.asarray(next(batches))
        except StopIteration:
            raise _error(
                "inputs is an empty iterable.",
                "pass an (N, ...) array or an iterable that yields at least one (B, ...) batch.",
            ) from None
        if first.ndim < 1:
            raise _error(
                f"each batch must be (B, ...), got shape {first.shape}.",
                "yield batches with the examples stacked on axis 0.",
            )
        n, ex_shape, in_dtype = None, tuple(first.shape[1:]), first.dtype
        batches = _chain(first, batches)
    else:
        raise _error(
            f"inputs must be an array or an iterable of arrays, got {type(inputs)}.",
            "pass an (N, *example_shape) array (a NumPy memory map is fine) or an iterable "
            "of (B, *example_shape) batches.",
        )
    if not (
        np.issubdtype(in_dtype, np.floating)
        or np.issubdtype(in_dtype, np.integer)
        or in_dtype == np.bool_
    ):
        raise _error(
            f"inputs must be numeric (float, int or bool), got dtype {in_dtype}.",
            "convert the inputs to a float array, e.g. inputs.astype(np.float32).",
        )
    x_dtype = in_dtype if np.issubdtype(in_dtype, np.floating) else np.dtype(np.float32)

    # ---- references --------------------------------------------------------------------
    nd = len(ex_shape)
    ref_kind: str
    shared_refs = None
    if references is None:
        ref_kind, shared_refs = "zeros", np.zeros((1, *ex_shape), x_dtype)
    elif callable(references):
        ref_kind = "generator"
    else:
        r_shape = np.shape(references)
        if tuple(r_shape[len(r_shape) - nd :]) != ex_shape or len(r_shape) - nd not in (0, 1, 2):
            raise _error(
                f"references must be shaped {ex_shape} (one), (K, {', '.join(map(str, ex_shape))})"
                f" (shared) or (N, K, ...) (per example) for examples of shape {ex_shape}; "
                f"got {r_shape}.",
                "give every reference the shape of one example, stacked on leading axes.",
            )
        if len(r_shape) - nd >= 1 and r_shape[len(r_shape) - nd - 1] == 0:
            raise _error(
                f"references of shape {r_shape} hold no references (K = 0), and the mean "
                "over references of an empty set is undefined.",
                "pass at least one reference per example (K >= 1), or references=None for "
                "the all-zero reference.",
            )
        if len(r_shape) - nd == 2:
            if n is None or r_shape[0] != n:
                raise _error(
                    f"per-example references (N, K, ...) need array inputs with the same N; "
                    f"got references {r_shape} for inputs with N={n}.",
                    "pass the inputs as one (N, ...) array, or references shared by all "
                    "examples, (K, ...).",
                )
            ref_kind = "per_example"
        else:
            ref_kind = "shared"
            shared_refs = np.asarray(references, dtype=x_dtype).reshape(-1, *ex_shape)
    per_target = target is not None and not callable(target) and np.ndim(target) > 0
    if per_target and n is None:
        raise _error(
            "a per-example target array needs array inputs, not an iterable.",
            "pass the inputs as one (N, ...) array (a NumPy memory map is fine).",
        )
    out_size = _check_target(fn, jax.ShapeDtypeStruct(ex_shape, x_dtype), target, n)
    if per_target:
        target_arr = np.asarray(target, np.int32)

    # ---- the compiled chunk function ------------------------------------------------------
    scalar = _scalar_fn(fn, None if per_target else target, out_size)
    mesh = Mesh(np.asarray(devices), ("batch",))
    batch_sh = NamedSharding(mesh, P("batch"))
    repl_sh = NamedSharding(mesh, P())

    def one(x, refs, t, idx):
        x = x.astype(x_dtype)
        f = lambda xx: scalar(xx, t)
        if ref_kind == "generator":
            refs, k = references, jax.random.fold_in(key, idx)
        else:
            refs, k = refs.astype(x_dtype), None
        out = deeplift_shap(
            f,
            refs,
            key=k,
            reference_chunk_size=reference_chunk_size,
            hypothetical=hypothetical,
            alphabet_axis=alphabet_axis,
            return_residuals=True,
            return_conditioning=True,
            **deeplift_options,
        )(x)
        assert isinstance(out, ShapScores)
        return out

    def chunk_fn(xs, refs, ts, idx):
        ref_axis = 0 if ref_kind == "per_example" else None
        t_axis = 0 if per_target else None
        return jax.vmap(one, in_axes=(0, ref_axis, t_axis, 0))(xs, refs, ts, idx)

    # Arguments arrive committed to their shardings (device_put below); jit follows them.
    compiled = jax.jit(chunk_fn, out_shardings=batch_sh)

    def run_chunk(c: int, xs: np.ndarray):
        lo, valid = c * chunk_size, xs.shape[0]
        xs = jax.device_put(_pad(xs, chunk_size), batch_sh)
        if ref_kind == "per_example":
            refs = jax.device_put(_pad(references[lo : lo + valid], chunk_size), batch_sh)
        elif ref_kind == "generator":
            refs = None
        else:
            refs = shared_dev
        ts = (
            jax.device_put(_pad(target_arr[lo : lo + valid], chunk_size), batch_sh)
            if per_target
            else None
        )
        idx = jax.device_put(np.arange(lo, lo + chunk_size, dtype=np.int32), batch_sh)
        return valid, compiled(xs, refs, ts, idx)

    shared_dev = None if shared_refs is None else jax.device_put(shared_refs, repl_sh)
    num_chunks = None if n is None else -(-n // chunk_size)
    names = ["contributions", "residuals", "conditioning"] + (
        ["hypothetical"] if hypothetical else []
    )

    # ---- disk state ------------------------------------------------------------------------
    config = {
        "format": _FORMAT,
        "num_examples": n,
        "example_shape": list(ex_shape),
        "input_dtype": in_dtype.str,
        "chunk_size": chunk_size,
        "references": ref_kind,
        "num_references": None if shared_refs is None else int(shared_refs.shape[0]),
        "hypothetical": hypothetical,
        "alphabet_axis": alphabet_axis,
        "target": None if target is None or per_target else repr(target),
        "model": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "inputs_sha1": None if n is None else _fingerprint_array(inputs),
        "deeplift_options": {k: repr(v) for k, v in sorted(deeplift_options.items())},
    }
    if ref_kind in ("shared", "per_example"):
        config["references_sha1"] = _fingerprint_array(
            shared_refs if ref_kind == "shared" else references
        )
    if per_target:
        config["target_sha1"] = hashlib.sha1(target_arr.tobytes()).hexdigest()
    chunk_dir = None
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        chunk_dir = os.path.join(out_dir, "chunks")
        manifest_path = os.path.join(out_dir, _MANIFEST)
        os.makedirs(chunk_dir, exist_ok=True)
        if resume and os.path.exists(manifest_path):
            with open(manifest_path) as fh:
                old = json.load(fh)
            diff = sorted(
                k for k in set(config) | set(old["config"]) if config.get(k) != old["config"].get(k)
            )
            if diff:
                raise _error(
                    f"{out_dir} holds a different job (settings differ: {', '.join(diff)}).",
                    "use a new out_dir, or resume=False to discard it.",
                )
            if old.get("complete"):
                return _load_final(out_dir, names, residual_threshold, conditioning_threshold)
        else:
            for fname in os.listdir(chunk_dir):
                os.remove(os.path.join(chunk_dir, fname))
        _write_manifest(manifest_path, config, complete=False)

    def chunk_path(c: int) -> str:
        return os.path.join(chunk_dir, f"chunk_{c:06d}.npz")

    def is_done(c: int) -> bool:
        return chunk_dir is not None and os.path.exists(chunk_path(c))

    # ---- run -------------------------------------------------------------------------------
    mem: dict[int, dict[str, np.ndarray]] = {}
    bad = {"count": 0, "worst": -1.0, "where": -1}
    ill = {"count": 0, "worst": -1.0, "where": -1}  # conditioning above its threshold

    def tally(arrays: dict, offset: int):
        _note_residuals(bad, arrays["residuals"], offset, residual_threshold)
        _note_conditioning(ill, arrays["conditioning"], offset, conditioning_threshold)

    def store(c: int, valid: int, out: ShapScores):
        arrays = {
            "contributions": out.contributions,
            "residuals": out.residuals,
            "conditioning": out.conditioning,
        }
        if hypothetical:
            arrays["hypothetical"] = out.hypothetical
        arrays = {k: np.asarray(v)[:valid] for k, v in arrays.items()}
        if chunk_dir is not None:
            _save_atomic(chunk_path(c), lambda fh: np.savez(fh, **arrays))
        else:
            mem[c] = arrays
        tally(arrays, c * chunk_size)
        if callback is not None:
            callback(
                c,
                Attribution(
                    arrays["contributions"],
                    arrays.get("hypothetical"),
                    arrays["residuals"],
                    arrays["conditioning"],
                ),
            )

    if batches is None:
        source = ((c, inputs[c * chunk_size : (c + 1) * chunk_size]) for c in range(num_chunks))
    else:
        source = enumerate(_rechunk(batches, chunk_size))
    bar = tqdm(total=n, unit="ex", desc="deeplift", disable=not progress, smoothing=0.1)
    pending = None
    seen = 0
    try:
        for c, xs in source:
            seen = c + 1
            if is_done(c):
                arrays = _load_chunk(chunk_path(c), ("residuals", "conditioning"))
                tally(arrays, c * chunk_size)
                bar.update(arrays["residuals"].shape[0])
                continue
            launched = (c, *run_chunk(c, np.asarray(xs)))  # async dispatch
            if pending is not None:
                store(*pending)
                bar.update(pending[1])
            pending = launched
        if pending is not None:
            store(*pending)
            bar.update(pending[1])
    finally:
        bar.close()
    total_chunks = seen
    if total_chunks == 0:
        raise _error(
            "inputs yielded no examples (every batch was empty).",
            "pass at least one example; check the iterable of batches.",
        )

    if bad["count"]:
        warnings.warn(
            f"{bad['count']} example(s) break DeepLIFT's summation-to-delta by more than "
            f"{residual_threshold:g} (worst: example {bad['where']}, residual "
            f"{bad['worst']:.3g}). A rule is inexact for this model (see warnings about "
            "gradient fallbacks) or f's scale is large; raise residual_threshold to silence.",
            stacklevel=2,
        )
    if ill["count"]:
        warnings.warn(
            conditioning_message(ill["count"], ill["worst"], ill["where"], conditioning_threshold),
            ConditioningWarning,
            stacklevel=2,
        )

    if chunk_dir is None:
        cat = {k: np.concatenate([mem[c][k] for c in range(total_chunks)]) for k in names}
        return Attribution(
            cat["contributions"], cat.get("hypothetical"), cat["residuals"], cat["conditioning"]
        )

    # ---- final files, streamed chunk by chunk -------------------------------------------------
    for name in names:
        first = _load_chunk(chunk_path(0), (name,))[name]
        row_shape, dtype = first.shape[1:], first.dtype
        total = n
        if total is None:
            total = 0
            for c in range(total_chunks):
                total += _load_chunk(chunk_path(c), (name,))[name].shape[0]

        def parts(name=name):
            for c in range(total_chunks):
                yield _load_chunk(chunk_path(c), (name,))[name]

        _write_npy_streaming(
            os.path.join(out_dir, f"{name}.npy"), parts(), (total, *row_shape), dtype
        )
    _write_manifest(
        manifest_path, config, complete=True, num_chunks=total_chunks, num_examples=total
    )
    if not keep_chunks:
        for c in range(total_chunks):
            os.remove(chunk_path(c))
        if not os.listdir(chunk_dir):
            os.rmdir(chunk_dir)
    return _load_final(out_dir, names, None, None)


def _chain(first, rest):
    yield first
    yield from rest


def _load_chunk(path: str, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Arrays of a chunk file; conditioning is NaN in chunks written without it."""
    with np.load(path) as z:
        out = {k: z[k] for k in names if k in z.files}
        if "conditioning" in names and "conditioning" not in out:
            out["conditioning"] = np.full(z["residuals"].shape, np.nan, z["residuals"].dtype)
    return out


def _note_residuals(bad: dict, r: np.ndarray, offset: int, threshold: float | None):
    if threshold is None:
        return
    r = np.asarray(r)
    over = ~(r <= threshold)
    if over.any():
        bad["count"] += int(over.sum())
        rr = np.where(np.isnan(r), np.inf, r)
        i = int(np.argmax(rr))
        if rr[i] > bad["worst"]:
            bad["worst"], bad["where"] = float(r[i]), offset + i


def _note_conditioning(ill: dict, k: np.ndarray, offset: int, threshold: float | None):
    """Count examples whose conditioning exceeds the threshold (NaN: not counted here, the
    residual check reports NaN scores), and keep the worst."""
    if threshold is None:
        return
    k = np.asarray(k)
    over = k > threshold
    if over.any():
        ill["count"] += int(over.sum())
        i = int(np.argmax(np.where(over, k, -np.inf)))
        if k[i] > ill["worst"]:
            ill["worst"], ill["where"] = float(k[i]), offset + i


def _write_manifest(
    path: str,
    config: dict,
    *,
    complete: bool,
    num_chunks: int | None = None,
    num_examples: int | None = None,
):
    data = {
        "config": config,
        "complete": complete,
        "num_chunks": num_chunks,
        "num_examples": num_examples,
        "files": ["contributions.npy", "residuals.npy", "conditioning.npy"]
        + (["hypothetical.npy"] if config["hypothetical"] else []),
    }
    _save_atomic(path, lambda fh: fh.write(json.dumps(data, indent=1).encode()))


def _load_final(
    out_dir: str,
    names: list[str],
    threshold: float | None,
    conditioning_threshold: float | None,
) -> Attribution:
    arrs = {}
    for k in names:
        path = os.path.join(out_dir, f"{k}.npy")
        if k == "conditioning" and not os.path.exists(path):
            continue  # a job finished by a version without conditioning.npy
        arrs[k] = np.load(path, mmap_mode="r")
    if threshold is not None:
        bad: dict = {"count": 0, "worst": -1.0, "where": -1}
        _note_residuals(bad, arrs["residuals"], 0, threshold)
        if bad["count"]:
            warnings.warn(
                f"{bad['count']} example(s) in {out_dir} have summation residuals above "
                f"{threshold:g} (worst: example {bad['where']}, {bad['worst']:.3g}).",
                stacklevel=3,
            )
    if conditioning_threshold is not None and "conditioning" in arrs:
        ill: dict = {"count": 0, "worst": -1.0, "where": -1}
        _note_conditioning(ill, arrs["conditioning"], 0, conditioning_threshold)
        if ill["count"]:
            warnings.warn(
                f"in {out_dir}: "
                + conditioning_message(
                    ill["count"], ill["worst"], ill["where"], conditioning_threshold
                ),
                ConditioningWarning,
                stacklevel=3,
            )
    return Attribution(
        arrs["contributions"], arrs.get("hypothetical"), arrs["residuals"], arrs.get("conditioning")
    )
