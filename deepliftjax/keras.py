"""Keras 3 models on the JAX backend as pure JAX functions, attributed exactly with no port.

:func:`from_keras` turns a built Keras 3 model into ``fn(params, x)``, a pure function of
the model's variables and input made from Keras's own ``model.stateless_call``. With
``KERAS_BACKEND=jax`` every Keras layer runs as JAX operations, so ``deeplift`` sees the
model's jaxpr and gives each operation its rule, as for a Flax model.

Install with ``pip install "deepliftjax[keras]"`` and set ``KERAS_BACKEND=jax`` before
keras is first imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from deepliftjax._errors import error

__all__ = ["from_keras"]

_INSTALL = 'install the extra: pip install "deepliftjax[keras]"'


def _keras() -> Any:
    """The keras module, checked to be Keras 3 running on JAX."""
    try:
        import keras
    except ImportError as e:
        raise error(f"deepliftjax.keras needs Keras 3 ({e}).", _INSTALL) from e
    major = str(getattr(keras, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 3:
        raise error(
            f"deepliftjax.keras needs Keras 3, found keras {keras.__version__}.",
            _INSTALL + " (tf.keras and Keras 2 have no stateless_call)",
        )
    # looked up at call time: the backend is fixed when keras is first imported
    backend = keras.backend.backend()
    if backend != "jax":
        raise error(
            f"Keras runs on the {backend!r} backend; from_keras needs the JAX backend, "
            "whose layers are JAX operations that deeplift can trace.",
            "set the environment variable KERAS_BACKEND=jax before importing keras "
            '(in the shell: export KERAS_BACKEND=jax; in Python: os.environ["KERAS_BACKEND"] '
            '= "jax" before the first "import keras"), then build or load the model again.',
        )
    return keras


def from_keras(
    model: Any, *, batched: bool = False
) -> tuple[Callable[[Any, Any], Any], dict[str, list[jax.Array]]]:
    """A Keras 3 model as a pure JAX function ``fn(params, x)`` and its variables.

    ``fn`` calls ``model.stateless_call(params["trainable"], params["non_trainable"], x,
    training=False)`` and returns the model's output, so it is traced, jitted, vmapped and
    differentiated like any JAX function, and :func:`deepliftjax.deeplift`,
    :func:`deepliftjax.deeplift_shap` and :func:`jax.grad` accept it. Inference semantics
    always: BatchNormalization uses its moving mean and variance, Dropout is off, and
    state updates that ``stateless_call`` returns are dropped. The model itself is not
    changed; ``params`` holds the variables' current values (JAX arrays), so weights
    assigned later are seen only by a new ``from_keras`` call.

    Args:
      model: a built Keras 3 model (or layer) on the JAX backend: functional,
        ``Sequential`` or subclassed.
      batched: the convention of ``fn``, as for :func:`deepliftjax.torch.from_torch`.
        ``False`` (default): ``fn`` takes one example without the batch axis and returns
        its output without one (the model is called on ``x[None]``), ready for
        :func:`deepliftjax.deeplift` and :func:`jax.vmap`. ``True`` (Keras's own): ``x``
        has a leading batch axis and so has the output, exactly as ``model(x)``; one
        example is then ``lambda p, xi: fn(p, xi[None])[0]`` (for one output array).

    Returns:
      ``(fn, params)``. ``params`` is ``{"trainable": [...], "non_trainable": [...]}``,
      the values of ``model.trainable_variables`` and ``model.non_trainable_variables``
      in that order. ``fn(params, x)`` returns what the model returns: an array, or a
      list/dict of arrays for a model with several outputs. ``x`` may be a list or dict
      of arrays for a model with several inputs (with ``batched=False`` every leaf loses
      its batch axis).

    Raises:
      DeepLiftError: Keras 3 is not installed, Keras runs on another backend than JAX
        (set the environment variable ``KERAS_BACKEND=jax`` before importing keras), the
        argument is not a Keras 3 model or layer, or the model is not built (it has no
        variables yet).

    Notes:
      Precision: on the JAX backend Keras's type promotion maps 64-bit types to 32-bit
      ones (``keras.backend.result_type("float64", "float64")`` is ``"float32"``), so
      even a float64 model (``keras.config.set_floatx("float64")`` under
      ``jax.enable_x64``) computes BatchNormalization and other promoted operations in
      float32: expect float32 summation residuals, about 1e-7 of ``|f|``.

      Saved ``.h5`` models load with Keras 3's legacy reader,
      ``keras.models.load_model(path, compile=False, custom_objects={...})``, and the
      result goes to ``from_keras`` like any model. ``compile=False`` skips the training
      configuration: with Keras 3.15.1 an ``.h5`` compiled with ChromBPNet's losses
      ``[multinomial_nll, "mse"]`` did not reload without it (``ValueError: Could not
      deserialize 'keras.metrics.mse'``), and reloaded with it the model's outputs were
      equal to the saved model's. ``custom_objects`` is then needed for custom layer
      classes only, not for custom losses. A ``Lambda`` layer holding a Python lambda
      (ChromBPNet's full model: ``logcount_predictions`` is
      ``Lambda(lambda x: tf.math.reduce_logsumexp(x, ...))``) is refused unless
      ``safe_mode=False``; its marshalled bytecode loads only on the Python version that
      wrote it, and runs with the globals of Keras's loader, which ``custom_objects``
      does not reach, so its ``tf`` is undefined. Attribute ChromBPNet's
      ``*_nobias.h5`` model instead (it has no ``Lambda``; ChromBPNet's own
      contribution scores use it). These were observed on files written by Keras 3.15.1
      in the legacy ``.h5`` format; no file written by Keras 2 was tried.

    Example:
      >>> import os; os.environ.setdefault("KERAS_BACKEND", "jax")
      'jax'
      >>> import jax.numpy as jnp, keras, deepliftjax
      >>> from deepliftjax.keras import from_keras
      >>> model = keras.Sequential(
      ...     [keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
      ... )
      >>> fn, params = from_keras(model)
      >>> f = lambda x: fn(params, x)[0]   # one example, a scalar output
      >>> x, ref = jnp.array([1.0, -2.0, 0.5]), jnp.zeros(3)
      >>> c = deepliftjax.deeplift(f, ref)(x)
      >>> bool(jnp.isclose(c.sum(), f(x) - f(ref), atol=1e-6))
      True
    """
    keras = _keras()
    if not isinstance(model, keras.layers.Layer):
        raise error(
            f"from_keras takes a Keras 3 model or layer, got {type(model).__module__}."
            f"{type(model).__qualname__}.",
            "pass a keras.Model built with Keras 3 (a tf.keras or Keras 2 model must be "
            "rebuilt or reloaded with Keras 3: keras.models.load_model(path, compile=False)).",
        )
    if not model.built:
        raise error(
            f"the Keras model {model.name!r} is not built: its variables do not exist yet.",
            "call it once on a batch (model(x)), call model.build((None, *example_shape)), "
            "or give it an input shape (keras.Input(shape) as its first layer).",
        )
    params = {
        "trainable": [v.value for v in model.trainable_variables],
        "non_trainable": [v.value for v in model.non_trainable_variables],
    }

    def fn(p: dict[str, list[jax.Array]], x: Any) -> Any:
        if not batched:
            x = jax.tree_util.tree_map(lambda a: a[None], x)
        out, _ = model.stateless_call(p["trainable"], p["non_trainable"], x, training=False)
        if not batched:
            out = jax.tree_util.tree_map(lambda a: a[0], out)
        return out

    fn.__doc__ = f"Keras model {model.name!r} as a JAX function (batched={batched})."
    return fn, params
