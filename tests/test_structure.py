"""The package's shape: no import cycles, short functions, a small public namespace, and
errors that point at the user's line."""

from __future__ import annotations

import ast
import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

import deepliftjax as dl

PKG = pathlib.Path(dl.__file__).parent
ROOT = PKG.parent
MAX_LINES = 80


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """Every deepliftjax module ``path`` imports, at any depth (deferred imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return {m for m in found if m.startswith("deepliftjax")}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: _imports(p, m) & set(files) - {m} for m, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# The package's __init__ re-exports its modules' names, and a package's submodules import
# names from it; those edges are the package facade, not a cycle between implementation
# modules, so __init__ modules are left out of the graph.
def _implementation_graph() -> dict[str, set[str]]:
    g = _graph()
    packages = {m for m, p in ((m, _path(m)) for m in g) if p.name == "__init__.py"}
    return {m: deps - packages for m, deps in g.items() if m not in packages}


def _path(module: str) -> pathlib.Path:
    p = ROOT.joinpath(*module.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = _implementation_graph()
    assert "deepliftjax._api" in graph and graph["deepliftjax._api"]  # the walk sees imports
    assert _cycles(graph) == []


def test_rule_families_import_the_kit_not_each_other():
    graph = _implementation_graph()
    families = {m for m in graph if m.startswith("deepliftjax._rules_")}
    for m in families:
        assert not (graph[m] & families) - {"deepliftjax._rules_products"}, (m, graph[m])
    leaf = {"deepliftjax._pair", "deepliftjax._errors", "deepliftjax._compat"}
    assert graph["deepliftjax._rulekit"] <= leaf


def test_private_jax_is_touched_in_compat_only():
    """jax._src and jax.interpreters (no stability promise) are imported by _compat alone, so
    a new JAX version's breakage is found and fixed in one module."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if n.startswith(("jax._src", "jax.interpreters"))]
            if bad:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {bad[0]}")
    assert found == [], found


def _long_functions() -> list[str]:
    """Functions whose code (docstring excluded) exceeds MAX_LINES lines, unless their
    docstring says why ("Long because ...")."""
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node) or ""
            body = node.body[1:] if doc and len(node.body) > 1 else node.body
            lines = node.end_lineno - body[0].lineno + 1
            if lines > MAX_LINES and "Long because" not in doc:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return long


def test_no_function_longer_than_80_lines():
    assert _long_functions() == []


# ---- the two APIs, against the docs -----------------------------------------------------


def _documented(page: str, prefix: str) -> set[str]:
    text = (ROOT / "docs" / page).read_text()
    return set(re.findall(rf"^::: {re.escape(prefix)}\.(\w+)\s*$", text, re.MULTILINE))


def test_user_api_is_the_documented_one():
    public = {n for n in dir(dl) if not n.startswith("_")}
    assert public == set(dl.__all__) - {"__version__"} | {"genomics", "plot", "rules"}
    documented = _documented("api.md", "deepliftjax") - {"genomics", "plot", "rules"}
    assert set(dl.__all__) - {"__version__"} == documented
    for internal in ("RULES", "Pair", "Context", "register_rule", "defrescale", "secant"):
        assert not hasattr(dl, internal), internal
    assert len(dl.__all__) <= 30


def test_extension_api_lives_in_rules():
    from deepliftjax import rules

    assert set(rules.__all__) == {n for n in dir(rules) if not n.startswith("_")} - {"annotations"}
    for name in ("RULES", "Pair", "Context", "register_rule", "deflinear", "defrescale",
                 "defshapley", "defbilinear", "defmaxmin", "definert", "defcall",
                 "defmaxreduction", "secant", "custom_multiplier"):  # fmt: skip
        assert name in rules.__all__, name
    text = (ROOT / "docs" / "extending.md").read_text()
    assert "::: deepliftjax.rules" in text


def test_registered_rules_print_their_names():
    from deepliftjax import rules

    anonymous = [p.name for p, r in rules.RULES.items() if getattr(r, "__name__", "") == "<lambda>"]
    assert anonymous == []
    assert "linear_rule" in repr(rules.RULES[jax.lax.add_p])


# ---- errors point at the user's line ----------------------------------------------------


def _model_with_sort(x):
    h = jnp.tanh(x)
    return jnp.sort(h).sum()  # the unsupported line


@pytest.mark.parametrize("wrap", ["plain", "jit", "inner_jit"])
def test_unsupported_primitive_names_the_users_line(wrap):
    f = _model_with_sort if wrap != "inner_jit" else jax.jit(_model_with_sort)
    t = dl.deeplift(f, 0.0)
    t = jax.jit(t) if wrap == "jit" else t
    with pytest.raises(dl.DeepLiftError) as err:
        t(jnp.ones(3))
    line = next(
        i + 1
        for i, s in enumerate(pathlib.Path(__file__).read_text().splitlines())
        if "# the unsupported line" in s and "return" in s
    )
    assert f"{pathlib.Path(__file__).name}:{line} (_model_with_sort)" in str(err.value)
    assert "'sort'" in str(err.value) and "Hint:" in str(err.value)


# ---- consistent signatures --------------------------------------------------------------


@pytest.mark.parametrize("fn", ["dinuc_shuffle", "shuffle"])
def test_shuffles_take_either_layout(fn):
    shuffle = getattr(dl, fn)
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (40,), 0, 4), 4)
    key = jax.random.key(3)
    last = shuffle(key, x, 3)
    first = jax.jit(lambda k, v: shuffle(k, v, 3, alphabet_axis=0))(key, x.T)
    assert first.shape == (3, 4, 40)
    assert bool((jnp.swapaxes(first, -1, -2) == last).all())
    assert bool((jnp.swapaxes(first, -1, -2) != x).any())  # it did shuffle
    with pytest.raises(dl.DeepLiftError, match="alphabet_axis=2"):
        shuffle(key, x, alphabet_axis=2)


@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
def test_deeplift_shap_takes_deeplifts_score_options(mode):
    w = jnp.arange(12.0).reshape(6, 2) / 10 - 0.3
    f = lambda v: jnp.sum(jnp.tanh(v.reshape(-1) @ w))  # noqa: E731
    x = jax.nn.one_hot(jnp.array([0, 1, 1]), 2)
    refs = jnp.stack([jax.nn.one_hot(jnp.array([1, 1, 0]), 2), jnp.full((3, 2), 0.5)])

    def run(**kw):
        g = dl.deeplift_shap(f, refs, **kw)
        if mode == "jit":
            return jax.jit(g)(x)
        if mode == "vmap":
            return jax.vmap(g)(jnp.stack([x, x]))[1]
        return g(x)

    for kw in ({"multiply_by_inputs": False}, {"onehot_axis": -1}, {}):
        want = sum(dl.deeplift(f, r, **kw)(x) for r in refs) / len(refs)
        assert jnp.allclose(run(**kw), want, atol=1e-6), kw
    # the default still sums to the mean Δf; raw multipliers differ from contributions
    mean_delta = float(jnp.mean(jnp.stack([f(x) - f(r) for r in refs])))
    assert abs(float(run().sum()) - mean_delta) < 1e-5
    assert not jnp.allclose(run(multiply_by_inputs=False), run())


def test_error_text_has_no_terminal_colour_codes():
    from deepliftjax._errors import eqn_str

    class Coloured:  # an equation as JAX prints it with jax_pprint_use_color on a terminal
        def __str__(self):
            return "a:\x1b[35mf32[3]\x1b[0m = sort[dimension=0] b"

    assert eqn_str(Coloured()) == "a:f32[3] = sort[dimension=0] b"


# Where the package may build an error other than through _errors.error, and why.
_ERRORS_BUILT_ELSEWHERE = {
    ("deepliftjax._errors", "DeepLiftError"),  # the builder itself
    ("deepliftjax._distributed", "DeepLiftError"),  # relays a message that has its hint
    ("deepliftjax.genomics._motifs", "DeepLiftError"),  # one line naming the pip install
    ("deepliftjax._store", "ValueError"),  # a truncated final file, caught where it is raised
    # messages that also print the offending equation (Context.error) or the guard's report
    ("deepliftjax._interpreter", "DeepLiftError"),
    ("deepliftjax._guard", "DeepLiftError"),
}


def test_errors_are_built_by_one_builder():
    """Bad input raises a DeepLiftError built by ``_errors.error`` (what was wrong, then
    ``Hint:`` and the fix), never a bare ValueError or TypeError without a hint."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            built = node.func.id
            if built in ("DeepLiftError", "ValueError", "TypeError"):
                if (name, built) not in _ERRORS_BUILT_ELSEWHERE:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {built}(...)")
    assert not found, "build errors with deepliftjax._errors.error:\n" + "\n".join(found)


def test_the_error_builder_names_the_fix():
    from deepliftjax._errors import DeepLiftError, error

    class Wrong(DeepLiftError, TypeError):
        pass

    e = error("x is a string.", "pass an array.", cls=Wrong)
    assert isinstance(e, ValueError) and isinstance(e, TypeError)
    assert str(e) == "x is a string.\nHint: pass an array."


def test_deeplift_vjp_takes_a_tuple_of_outputs():
    f = lambda x: (jnp.tanh(x), jnp.sum(x**2))  # noqa: E731
    x, r = jnp.array([1.0, 2.0]), jnp.zeros(2)
    out, out_ref, pullback = dl.deeplift_vjp(f, r, x)
    (m,) = pullback((jnp.zeros(2), jnp.ones(())))  # the second output: sum(x**2)
    assert jnp.allclose(m * (x - r), x**2, atol=1e-6)
    (m,) = pullback((jnp.array([1.0, 0.0]), jnp.zeros(())))
    assert jnp.allclose(m * (x - r), jnp.array([jnp.tanh(1.0), 0.0]), atol=1e-6)
    with pytest.raises(dl.DeepLiftError, match="has_aux=True"):
        dl.deeplift(f, r)(x)  # deeplift attributes one scalar


def test_one_registration_fills_every_trait_table():
    """A primitive's rule and traits are declared in one public call; every table that the
    interpreter, the switch scores and the other rule sets read then knows it."""
    from deepliftjax import _discrete, _interpreter, _pair, _registry, _rulesets, rules

    toy = jax.extend.core.Primitive("toy_traits_demo")
    toy.def_impl(lambda x: x)
    toy.def_abstract_eval(lambda x: x)

    def rule(ctx, x, **params):
        return _pair.Pair(toy.bind(x.x), toy.bind(x.r))

    def score(ctx, prim, invals, params, outs):
        return [None]

    rules.register_rule(
        toy, rule, elementwise=True, domain_edge=True, moves="first", unit_linear=True,
        call=True, score=score, rescale=False,
    )  # fmt: skip
    try:
        assert _interpreter.RULES[toy] is rule and rules.RULES[toy] is rule
        assert toy in _pair.ELEMENTWISE and toy in _pair.DOMAIN_EDGE
        assert toy in _pair.MOVES_FIRST and toy not in _pair.MOVES_ALL and toy in _pair.EXACT
        assert toy in _registry.UNIT_LINEAR and toy in _interpreter.CALLS
        assert _discrete.SCORES[toy] is score
        assert _registry.RESCALE_PRIMS[toy] is False
        assert rules.traits(toy) == {
            "rule": rule, "elementwise": True, "domain_edge": True, "moves": "first",
            "exact": True, "unit_linear": True, "call": True, "score": score, "rescale": False,
        }  # fmt: skip
        assert _rulesets.METHODS["reveal_cancel"](toy) is rule  # a call keeps its own rule
    finally:
        for table in (_registry.ELEMENTWISE, _registry.DOMAIN_EDGE, _registry.MOVES_FIRST,
                      _registry.EXACT, _registry.UNIT_LINEAR, _registry.CALLS):  # fmt: skip
            table.discard(toy)
        for table in (_registry.RULES, _registry.SCORES, _registry.RESCALE_PRIMS):
            table.pop(toy, None)
    with pytest.raises(dl.DeepLiftError, match="moves='sideways'"):
        rules.register_rule(toy, rule, moves="sideways")
    with pytest.raises(dl.DeepLiftError, match="score=3 is not callable"):
        rules.register_rule(toy, rule, score=3)


_TABLES = (
    "RULES|CALLS|ELEMENTWISE|DOMAIN_EDGE|MOVES_FIRST|MOVES_ALL|EXACT|UNIT_LINEAR|SCORES|"
    "RESCALE_PRIMS"
)


def test_trait_tables_are_written_only_by_the_registration():
    """No module but ``_registry`` writes a rule or trait table by hand."""
    pattern = re.compile(
        rf"\b({_TABLES})(\[[^]]*\]\s*=[^=]|\.(add|update|pop|discard|setdefault|clear)\()"
    )
    root = pathlib.Path(dl.__file__).parent
    offenders = [
        f"{path.relative_to(root)}:{i}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "_registry.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "trait tables written outside register_rule:\n" + "\n".join(offenders)
    # and the check itself sees a write
    assert pattern.search("ELEMENTWISE.add(p)") and pattern.search("SCORES[p] = f")


def test_one_loop_skips_dead_equations_and_drops_values_after_their_last_use():
    """``_walk.walk`` (the interpreter's and the split products' loop): an equation nothing
    reads is not evaluated (a sort, which has no DeepLIFT rule, left unused), one with
    effects is; each value is released once its last reader has run."""
    import gc
    import weakref

    import numpy as np

    from deepliftjax import _walk

    def g(x):
        jnp.sort(x)  # dead: no rule needed
        jax.debug.callback(lambda v: seen.append(float(v)), x[0])  # effects: kept
        return jnp.tanh(x).sum()

    seen: list[float] = []
    x, r = jnp.array([1.0, -2.0]), jnp.zeros(2)
    c = dl.deeplift(g, r)(x)
    np.testing.assert_allclose(c, jnp.tanh(x), rtol=1e-6)
    assert seen  # the callback ran

    jaxpr = jax.make_jaxpr(lambda a: jnp.sin(jnp.cos(jnp.exp(a))) + 1.0)(1.0).jaxpr
    assert _walk.live_equations(jaxpr) == [True] * len(jaxpr.eqns)

    class Box:  # a value the test can watch
        def __init__(self, v):
            self.v = v

    refs, alive_at = [], []

    def step(eqn, invals):
        gc.collect()
        alive_at.append(sum(ref() is not None for ref in refs))
        fn = {"exp": np.exp, "cos": np.cos, "sin": np.sin}.get(eqn.primitive.name)
        vals = [v.v if isinstance(v, Box) else v for v in invals]
        out = Box(fn(vals[0]) if fn else vals[0] + vals[1])
        refs.append(weakref.ref(out))
        return [out]

    (out,) = _walk.walk(jaxpr, [], [Box(1.0)], step)
    np.testing.assert_allclose(out.v, np.sin(np.cos(np.exp(1.0))) + 1.0)
    assert alive_at == [0, 1, 1, 1]  # each intermediate freed once its reader ran


def test_stop_gradient_is_a_table_rule():
    from deepliftjax import _interpreter, rules
    from deepliftjax._rules_stop import stop_gradient_rule

    assert rules.RULES[jax.lax.stop_gradient_p] is stop_gradient_rule
    assert rules.traits(jax.lax.stop_gradient_p)["elementwise"]
    assert '"stop_gradient"' not in pathlib.Path(_interpreter.__file__).read_text()


def test_a_missing_private_api_warns_once_naming_it(monkeypatch):
    """``_compat``'s source-location shims fall back to no location on a JAX without the
    private API, with one RuntimeWarning naming it (never silently)."""
    from jax._src import source_info_util

    from deepliftjax import _compat

    def gone(*args, **kwargs):
        raise AttributeError("user_frames was removed")

    monkeypatch.setattr(source_info_util, "user_frames", gone)
    monkeypatch.setattr(_compat, "_MISSING", set())
    eqn = jax.make_jaxpr(jnp.sin)(1.0).jaxpr.eqns[0]
    with pytest.warns(RuntimeWarning, match="user_frames.*user_frames was removed"):
        assert _compat.user_location(eqn) is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.user_location(eqn) is None  # once only
