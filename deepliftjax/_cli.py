"""``deepliftjax-attribute``: DeepLIFT / DeepLIFT-SHAP scores for array files.

Example::

    deepliftjax-attribute mymodels.py:predict seqs.npy --shuffles 20 --hypothetical \\
        --modisco -o scores/

``MODEL`` is ``module:function`` (importable) or ``path/to/file.py:function``; the
function takes ONE example (``inputs[i]``) and returns a scalar, or an array from which
``--target`` picks one value. For a Flax model, write a small file that loads the
parameters and defines ``def predict(x): return model.apply(params, x[None])[0]``.

Writes ``contributions.npy``, ``residuals.npy``, ``conditioning.npy`` (sum|C| / |Δf| per
example, with a warning above ``--conditioning-threshold``) and, with ``--hypothetical``,
``hypothetical.npy`` (with ``--modisco`` also ``ohe.npy`` and ``shap.npy`` shaped
``(N, 4, L)`` for ``modisco motifs -s ohe.npy -a shap.npy``) into ``--out-dir``; rerunning
the same command resumes an interrupted job.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

PROG = "deepliftjax-attribute"


class CliError(Exception):
    """A user error: printed as ``deepliftjax-attribute: error: ...``, exit status 2."""


def _load_array(path: str, what: str, mmap: bool = True) -> np.ndarray:
    if not os.path.exists(path):
        raise CliError(f"{what} file not found: {path}")
    if path.endswith(".npz"):
        with np.load(path) as z:
            keys = list(z.keys())
            if len(keys) != 1:
                raise CliError(
                    f"{what} file {path} holds {len(keys)} arrays ({', '.join(keys)}); "
                    "save exactly one array, or use .npy."
                )
            arr = z[keys[0]]
    elif path.endswith(".npy"):
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None)
        except ValueError as e:  # object arrays and the like
            raise CliError(f"cannot read {what} file {path} as a numeric .npy array: {e}") from e
    else:
        raise CliError(f"{what} file must be .npy or .npz, got {path}")
    if not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise CliError(
            f"{what} must be numeric (float, int or bool), got dtype {arr.dtype} in {path}."
        )
    return arr


def _load_model(spec: str):
    if ":" not in spec:
        raise CliError(f"MODEL must be 'module:function' or 'file.py:function', got {spec!r}.")
    mod_name, _, attr = spec.rpartition(":")
    if mod_name.endswith(".py"):
        if not os.path.exists(mod_name):
            raise CliError(f"model file not found: {mod_name}")
        name = f"_deepliftjax_user_model_{abs(hash(os.path.abspath(mod_name)))}"
        spec_ = importlib.util.spec_from_file_location(name, mod_name)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[name] = module
        try:
            spec_.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file failed to run
            raise CliError(f"loading {mod_name} failed: {type(e).__name__}: {e}") from e
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise CliError(
                f"cannot import model module {mod_name!r} ({e}); check PYTHONPATH or pass "
                "path/to/file.py:function."
            ) from e
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise CliError(f"{mod_name} has no attribute {attr!r}.")
        fn = getattr(fn, part)
    if not callable(fn):
        raise CliError(f"{spec} is not callable (got {type(fn).__name__}).")
    return fn


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0].strip("` "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("model", help="module:function or file.py:function (one example in)")
    p.add_argument("inputs", help=".npy (or one-array .npz) of shape (N, ...)")
    refs = p.add_mutually_exclusive_group()
    refs.add_argument(
        "-r", "--references", help=".npy references: (...) one, (K, ...) shared or (N, K, ...) each"
    )
    refs.add_argument(
        "--shuffles",
        type=int,
        metavar="K",
        help="K shuffled references per example (one-hot (N, L, A) inputs)",
    )
    p.add_argument(
        "--shuffle-kind",
        choices=["dinuc", "plain"],
        default="dinuc",
        help="dinucleotide-preserving (default) or plain shuffle",
    )
    p.add_argument(
        "-t",
        "--target",
        default=None,
        help="output index to attribute, or .npy of per-example indices "
        "(default: the model returns a scalar)",
    )
    p.add_argument("-o", "--out-dir", default="deepliftjax_out", help="output directory")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--reference-chunk-size", type=int, default=10)
    p.add_argument(
        "--hypothetical",
        action="store_true",
        help="also write hypothetical contributions (one-hot inputs)",
    )
    p.add_argument(
        "--modisco",
        action="store_true",
        help="also write ohe.npy and shap.npy (N, 4, L) for modisco-lite (implies --hypothetical)",
    )
    p.add_argument("--alphabet-axis", type=int, default=-1, help="one-hot axis of an example")
    p.add_argument("--seed", type=int, default=0, help="seed for shuffled references")
    p.add_argument("--residual-threshold", type=float, default=1e-3)
    p.add_argument(
        "--conditioning-threshold",
        type=float,
        default=100.0,
        help="warn about examples whose scores cancel, sum|C| / |Δf| above this "
        "(default 100; inf: no check)",
    )
    p.add_argument("--no-resume", action="store_true", help="discard a previous run's chunks")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_onehot(x: np.ndarray, axis: int, why: str) -> None:
    if x.ndim != 3:
        raise CliError(f"{why} needs one-hot inputs shaped (N, L, A), got shape {x.shape}.")
    sample = np.asarray(x[: min(len(x), 64)])
    if not np.isin(sample, (0, 1)).all() or (sample.sum(axis=axis) > 1).any():
        raise CliError(
            f"{why} needs one-hot inputs (0/1 values, at most one 1 per position along "
            f"axis {axis}); the first examples of the inputs are not."
        )


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    inputs = _load_array(args.inputs, "inputs")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise CliError(f"inputs must be shaped (N, ...) with N >= 1, got {inputs.shape}.")
    fn = _load_model(args.model)
    hypothetical = args.hypothetical or args.modisco

    import jax

    from deepliftjax._hypothetical import export_modisco
    from deepliftjax._runner import attribute
    from deepliftjax._shuffle import dinuc_shuffle, shuffle

    ex_shape = inputs.shape[1:]
    if args.shuffles is not None:
        if args.shuffles < 1:
            raise CliError(f"--shuffles must be >= 1, got {args.shuffles}.")
        if args.alphabet_axis not in (-1, inputs.ndim - 2):
            raise CliError("--shuffles needs the alphabet on the last axis, (N, L, A).")
        _check_onehot(inputs, -1, "--shuffles")
        kind = dinuc_shuffle if args.shuffle_kind == "dinuc" else shuffle
        references: Any = functools.partial(kind, num_shuffles=args.shuffles)
    elif args.references is not None:
        references = _load_array(args.references, "references")
        nd = references.ndim - len(ex_shape)
        if tuple(references.shape[max(nd, 0) :]) != ex_shape or nd not in (0, 1, 2):
            raise CliError(
                f"references {args.references} have shape {references.shape}; for inputs of "
                f"shape {inputs.shape} they must be {ex_shape}, (K, *{ex_shape}) or "
                f"({inputs.shape[0]}, K, *{ex_shape})."
            )
        if nd == 2 and references.shape[0] != inputs.shape[0]:
            raise CliError(
                f"per-example references have N={references.shape[0]} but inputs have "
                f"N={inputs.shape[0]}."
            )
    else:
        references = None
    if hypothetical:
        _check_onehot(inputs, args.alphabet_axis, "--hypothetical/--modisco")

    target: Any = None
    if args.target is not None:
        if args.target.endswith((".npy", ".npz")):
            target = _load_array(args.target, "target", mmap=False)
            if target.shape != (inputs.shape[0],) or not np.issubdtype(target.dtype, np.integer):
                raise CliError(
                    f"per-example targets must be an int array of shape ({inputs.shape[0]},), "
                    f"got {target.dtype} {target.shape}."
                )
        else:
            try:
                target = int(args.target)
            except ValueError:
                raise CliError(
                    f"--target must be an output index or a .npy file, got {args.target!r}."
                ) from None

    try:
        res = attribute(
            fn,
            inputs,
            references,
            target=target,
            key=jax.random.key(args.seed),
            chunk_size=args.chunk_size,
            reference_chunk_size=args.reference_chunk_size,
            hypothetical=hypothetical,
            alphabet_axis=args.alphabet_axis,
            out_dir=args.out_dir,
            resume=not args.no_resume,
            progress=not args.no_progress,
            residual_threshold=args.residual_threshold,
            conditioning_threshold=args.conditioning_threshold,
        )
    except ValueError as e:
        raise CliError(str(e)) from e
    written = ["contributions.npy", "residuals.npy"] + (
        ["hypothetical.npy"] if hypothetical else []
    )
    if args.modisco:
        try:
            export_modisco(args.out_dir, inputs, res.hypothetical, alphabet_axis=args.alphabet_axis)
        except ValueError as e:
            raise CliError(f"--modisco: {e}") from e
        written += ["ohe.npy", "shap.npy"]
    stats = f"max summation residual {float(np.max(res.residuals)):.2g}"
    if res.conditioning is not None:  # None: a job finished by an older version
        written.insert(2, "conditioning.npy")
        stats += f", max conditioning {float(np.max(res.conditioning)):.3g}"
    print(f"{PROG}: wrote {', '.join(written)} to {args.out_dir} ({stats})", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 on a user error)."""
    try:
        return run(argv)
    except CliError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
