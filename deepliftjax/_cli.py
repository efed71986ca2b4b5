"""The ``deepliftjax-attribute`` command: DeepLIFT / DeepLIFT-SHAP scores for array files.

Example::

    deepliftjax-attribute mymodels.py:predict seqs.npy --shuffles 20 --hypothetical \\
        --modisco -o scores/

See :data:`DESCRIPTION` and :data:`EPILOG` (its ``--help``) for the arguments.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import pkgutil
import runpy
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

PROG = "deepliftjax-attribute"

DESCRIPTION = "DeepLIFT / DeepLIFT-SHAP scores for array files."

EPILOG = """\
MODEL is module:function (importable from the current directory or PYTHONPATH) or
path/to/file.py:function. The function takes ONE example (inputs[i]) and returns a scalar,
or an array from which --target picks one value. For a Flax model, write a small file that
loads the parameters and defines: def predict(x): return model.apply(params, x[None])[0]
A PyTorch model (the torch extra): MODEL may name a torch.nn.Module, or a function of no
arguments returning one; it is converted by deepliftjax.torch.from_torch and called on one
example (it sees inputs[i][None]). PyTorch's (N, 4, L) DNA: --alphabet-axis 0.

References: without --references or --shuffles, every example is attributed against ONE
ALL-ZERO reference (an input of zeros, the same shape as an example). For one-hot DNA the
usual choice is --shuffles K (dinucleotide-shuffled copies of each sequence).

Writes contributions.npy, residuals.npy (the ABSOLUTE summation residual per example,
|sum(C) - delta f|, max over references; summation_residual() in Python reports the
RELATIVE one, divided by |delta f|), conditioning.npy (sum|C| / |delta f| per example)
and, with --hypothetical, hypothetical.npy and projected.npy (hypothetical x one-hot: the
present base's score) into --out-dir (with --modisco also ohe.npy and
shap.npy shaped (N, 4, L), for: modisco motifs -s ohe.npy -a shap.npy).

A job is identified by its content (the model's traced computation and every weight in it,
inside jax.jit, checkpoint, scan or Flax transforms too; the options; the references; the
versions) and each chunk by its rows: rerunning the same command resumes an interrupted
job, an edited input row recomputes only its chunk, and a different job in the same
--out-dir is refused (--no-resume starts over). A running job locks --out-dir: the same
command started again waits for it and reuses its chunks; a different job stops at once,
naming the process (host and pid) that holds the lock. Exit status: 0 done, 2 error, 130
interrupted (Ctrl-C).

Example:
  deepliftjax-attribute mymodels.py:predict seqs.npy --shuffles 20 --modisco -o scores/
"""


class CliError(Exception):
    """A user error: printed as ``deepliftjax-attribute: error: ...``, exit status 2."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("deepliftjax")
    except Exception:  # noqa: BLE001 - not installed: the source tree's version
        import deepliftjax

        return deepliftjax.__version__


def _load_array(path: str, what: str, mmap: bool = True) -> np.ndarray:
    if not os.path.exists(path):
        raise CliError(f"{what} file not found: {path}")
    try:
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
            arr = np.load(path, mmap_mode="r" if mmap else None)
        else:
            raise CliError(f"{what} file must be .npy or .npz, got {path}")
    except (ValueError, OSError, EOFError) as e:  # object arrays, truncated or not numpy
        raise CliError(f"cannot read {what} file {path} as a numeric array: {e}") from e
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
    """``module:function`` through :func:`pkgutil.resolve_name`, ``file.py:function``
    through :func:`runpy.run_path` (the same in every process, so jobs resume)."""
    if ":" not in spec:
        raise CliError(f"MODEL must be 'module:function' or 'file.py:function', got {spec!r}.")
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        if not os.path.exists(where):
            raise CliError(f"model file not found: {where}")
        try:
            fn: Any = runpy.run_path(where, run_name="__deepliftjax_model__")
        except Exception as e:  # noqa: BLE001 - the user's file failed to run
            raise CliError(f"loading {where} failed: {type(e).__name__}: {e}") from e
        for i, part in enumerate(attr.split(".")):
            fn = fn.get(part) if i == 0 else getattr(fn, part, None)
            if fn is None:
                raise CliError(f"{where} has no attribute {attr!r}.")
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            fn = pkgutil.resolve_name(spec)
        except ModuleNotFoundError as e:
            raise CliError(
                f"cannot import model module {where!r} ({e}); check PYTHONPATH or pass "
                "path/to/file.py:function."
            ) from e
        except (AttributeError, ValueError) as e:
            raise CliError(f"{where} has no attribute {attr!r}.") from e
    module = _torch_module(fn)
    if module is not None:
        return module
    if not callable(fn):
        raise CliError(f"{spec} is not callable (got {type(fn).__name__}).")
    return fn


def _is_torch_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (without importing torch)."""
    return any(
        c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module"
        for c in type(obj).__mro__
    )


def _torch_module(obj: Any) -> Any:
    """A torch module named by MODEL: the module itself, or a function of no arguments that
    returns one (``def load(): return torch.load(...)``); None for anything else."""
    if _is_torch_module(obj):
        return obj
    if callable(obj) and not isinstance(obj, type):
        try:
            takes_arguments = bool(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            return None
        # only a loader of no parameters is called: a model (one example in, even
        # ``def predict(*xs)``) is never called without its input
        if not takes_arguments:
            try:
                made = obj()
            except Exception as e:  # noqa: BLE001 - the user's loader failed
                raise CliError(f"calling {obj.__name__}() failed: {type(e).__name__}: {e}") from e
            return made if _is_torch_module(made) else None
    return None


def _from_torch(module: Any, example: np.ndarray) -> Any:
    """A torch module as the CLI's function of one example (``deepliftjax.torch``)."""
    from deepliftjax.torch import from_torch

    fn, params = from_torch(module, example)
    return lambda x: fn(params, x)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    add = p.add_argument
    add("model", help="module:function or path/to/file.py:function; takes ONE example")
    add("inputs", help=".npy (or one-array .npz) of shape (N, ...); read chunk by chunk")
    refs = p.add_mutually_exclusive_group()
    refs.add_argument(
        "-r",
        "--references",
        help=".npy references: (...) one, (K, ...) shared, (N, ...) or (N, K, ...) per example "
        "(default, without --references or --shuffles: one all-zero reference)",
    )
    refs.add_argument(
        "--shuffles",
        type=int,
        metavar="K",
        help="K shuffled references per example (one-hot (N, L, A) inputs)",
    )
    _add_reference_options(p)
    _add_job_options(p)
    add("--version", action="version", version=f"%(prog)s {_version()}")
    return p


def _add_reference_options(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add(
        "--reference-layout",
        choices=["shared", "per-example"],
        default=None,
        help="how to read --references shaped (K, ...) when K equals N (ambiguous): every "
        "example against all K (shared), or row i for example i (per-example)",
    )
    add(
        "--shuffle-kind",
        choices=["dinuc", "plain"],
        default="dinuc",
        help="dinucleotide-preserving (default) or plain shuffle",
    )
    add(
        "-t",
        "--target",
        default=None,
        help="output index to attribute, or .npy of per-example indices "
        "(default: the model returns a scalar)",
    )


def _add_job_options(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add("-o", "--out-dir", default="deepliftjax_out", help="output directory (default %(default)s)")
    add("--chunk-size", type=int, default=256, help="examples per compiled call (default 256)")
    add(
        "--reference-chunk-size",
        type=int,
        default=10,
        help="references per step of the scan over references (default 10)",
    )
    add(
        "--hypothetical",
        action="store_true",
        help="also write hypothetical contributions (one-hot inputs)",
    )
    add(
        "--modisco",
        action="store_true",
        help="also write ohe.npy and shap.npy (N, 4, L) for modisco-lite (implies --hypothetical)",
    )
    add(
        "--alphabet-axis",
        type=int,
        default=-1,
        help="one-hot axis of an example (default -1; 0 for PyTorch's (4, L))",
    )
    add("--seed", type=int, default=0, help="seed for shuffled references (default 0)")
    add(
        "--residual-threshold",
        type=float,
        default=1e-3,
        help="warn about examples whose absolute summation residual |sum(C) - delta f| "
        "exceeds this (default 1e-3)",
    )
    add(
        "--conditioning-threshold",
        type=float,
        default=100.0,
        help="warn about examples whose scores cancel, sum|C| / |delta f| above this "
        "(default 100; inf: no check)",
    )
    add(
        "--check",
        choices=["warn", "raise", "none"],
        default="warn",
        help="summation guard of every DeepLIFT call: warn (default) or raise when scores miss "
        "summation to delta, or none; it never changes the scores",
    )
    add("--no-resume", action="store_true", help="delete a previous run's results and start over")
    add("--no-progress", action="store_true", help="no progress bar")


def _alphabet_axis(args, inputs: np.ndarray) -> int:
    """--alphabet-axis (an axis of one example) counted from the end: the same axis of an
    example and of the (N, ...) batch."""
    from deepliftjax._errors import DeepLiftError
    from deepliftjax._hypothetical import axis_from_end

    try:
        return axis_from_end(args.alphabet_axis, inputs.shape[1:], "--alphabet-axis")
    except DeepLiftError as e:
        raise CliError(str(e)) from e


def _check_onehot(x: np.ndarray, axis: int, why: str) -> None:
    if x.ndim != 3:
        raise CliError(
            f"{why} needs one-hot inputs shaped (N, L, A) (or (N, A, L) with --alphabet-axis 0), "
            f"got shape {x.shape}."
        )
    sample = np.asarray(x[: min(len(x), 64)])
    if not np.isin(sample, (0, 1)).all() or (sample.sum(axis=axis) > 1).any():
        raise CliError(
            f"{why} needs one-hot inputs (0/1 values, at most one 1 per position along "
            f"axis {axis}); the first examples of the inputs are not."
        )


def _references(args, inputs: np.ndarray) -> Any:
    """The references argument of :func:`attribute`, checked as :func:`attribute` will."""
    from deepliftjax._batch_references import classify_references
    from deepliftjax._shuffle import dinuc_shuffle, shuffle

    if args.shuffles is not None:
        if args.shuffles < 1:
            raise CliError(f"--shuffles must be >= 1, got {args.shuffles}.")
        axis = _alphabet_axis(args, inputs)
        _check_onehot(inputs, axis, "--shuffles")
        kind = dinuc_shuffle if args.shuffle_kind == "dinuc" else shuffle
        # one example is (L, A) or, with --alphabet-axis 0, (A, L): PyTorch's layout
        return functools.partial(kind, num_shuffles=args.shuffles, alphabet_axis=axis + 2)
    if args.references is None:
        return None
    references = _load_array(args.references, "references")
    classify_references(
        references, inputs.shape[1:], inputs.shape[0], np.float32, _layout(args)
    )  # a DeepLiftError here names the shapes (and the layout option when ambiguous)
    return references


def _layout(args) -> str | None:
    return None if args.reference_layout is None else args.reference_layout.replace("-", "_")


def _target(args, inputs: np.ndarray) -> Any:
    if args.target is None:
        return None
    if args.target.endswith((".npy", ".npz")):
        target = _load_array(args.target, "target", mmap=False)
        if target.shape != (inputs.shape[0],) or not np.issubdtype(target.dtype, np.integer):
            raise CliError(
                f"per-example targets must be an int array of shape ({inputs.shape[0]},), "
                f"got {target.dtype} {target.shape}."
            )
        return target
    try:
        return int(args.target)
    except ValueError:
        raise CliError(
            f"--target must be an output index or a .npy file, got {args.target!r}."
        ) from None


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the job, write the files; return the exit status.

    Raises:
      CliError, DeepLiftError, OSError: user errors (:func:`main` prints them on one line).
      JobInterrupted: Ctrl-C during the job.
    """
    args = _parser().parse_args(argv)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise CliError(f"--out-dir {args.out_dir} is a file, not a directory.")
    inputs = _load_array(args.inputs, "inputs")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise CliError(f"inputs must be shaped (N, ...) with N >= 1, got {inputs.shape}.")
    hypothetical = args.hypothetical or args.modisco
    axis = _alphabet_axis(args, inputs)
    if hypothetical:
        _check_onehot(inputs, axis, "--hypothetical/--modisco")
    references = _references(args, inputs)
    target = _target(args, inputs)
    fn = _load_model(args.model)
    if _is_torch_module(fn):
        fn = _from_torch(fn, np.asarray(inputs[0]))

    import jax

    from deepliftjax._hypothetical import export_modisco
    from deepliftjax._runner import attribute

    res = attribute(
        fn,
        inputs,
        references,
        target=target,
        key=jax.random.key(args.seed),
        reference_layout=_layout(args),
        chunk_size=args.chunk_size,
        reference_chunk_size=args.reference_chunk_size,
        hypothetical=hypothetical,
        alphabet_axis=axis,
        out_dir=args.out_dir,
        resume=not args.no_resume,
        progress=not args.no_progress,
        residual_threshold=args.residual_threshold,
        conditioning_threshold=args.conditioning_threshold,
        check=None if args.check == "none" else args.check,
    )
    written = ["contributions.npy", "residuals.npy", "conditioning.npy"]
    written += ["hypothetical.npy", "projected.npy"] if hypothetical else []
    if args.modisco:
        try:
            export_modisco(args.out_dir, inputs, res.hypothetical, alphabet_axis=axis)
        except ValueError as e:
            raise CliError(f"--modisco: {e}") from e
        written += ["ohe.npy", "shap.npy"]
    stats = "max absolute summation residual |sum(C) - delta f| "
    stats += f"{float(np.max(res.residuals)):.2g}, max conditioning "
    stats += f"{float(np.max(res.conditioning)):.3g}"
    print(f"{PROG}: wrote {', '.join(written)} to {args.out_dir} ({stats})", file=sys.stderr)
    return 0


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status: 0, 2 (an error, printed on one line)
    or 130 (interrupted; finished chunks are kept for the rerun)."""
    from deepliftjax._runner import JobInterrupted

    try:
        return run(argv)
    except JobInterrupted as e:
        total = "?" if e.total is None else e.total
        print(
            f"{PROG}: interrupted after chunk {e.done}/{total}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (CliError, ValueError, OSError) as e:  # DeepLiftError is a ValueError
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the model's own code failed
        print(f"{PROG}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
