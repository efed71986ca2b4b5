"""Print the jaxpr parameters deepliftjax reads, for the installed JAX (a porting aid).

python benchmarks/probe_jax.py
"""

import jax
import jax.numpy as jnp

import deepliftjax as dl


def show(name, f, *args):
    j = jax.make_jaxpr(f)(*args)
    for e in j.jaxpr.eqns:
        params = {k: type(v).__name__ for k, v in e.params.items()}
        print(f"{name}: {e.primitive.name} {params}")


x = jnp.arange(3.0)
show("scan", lambda x: jax.lax.scan(lambda c, a: (c + a, c * a), 0.0, x), x)
show("cond", lambda x: jax.lax.cond(x[0] > 0, jnp.sin, jnp.cos, x), x)
show("while", lambda x: jax.lax.fori_loop(0, 3, lambda i, c: c * 2, x), x)
show("jit", jax.jit(jnp.sin), x)
show("custom_jvp", jax.nn.relu, x)
show("remat", jax.checkpoint(jnp.sin), x)
print(
    jax.__version__,
    "scan contributions:",
    dl.deeplift(lambda x: jax.lax.scan(lambda c, a: (jnp.tanh(c + a), c), 0.0, x)[0], jnp.zeros(3))(
        x
    ),
)
