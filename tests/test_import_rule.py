"""The framework-import rule: only `puffer/backends/` may import torch, jax, jaxlib or tinygrad.

Everything else is written once against a backend object; a stray `import torch` would tie an algorithm
to one framework (and make `import puffer` fail where torch is not installed). The check parses each
file, so the names inside strings, docstrings and comments do not count, while imports hidden inside
functions, `try` blocks, `importlib.import_module("torch")` and `__import__("jax")` calls do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FRAMEWORKS = frozenset({"torch", "jax", "jaxlib", "tinygrad"})
PACKAGE = Path(__file__).resolve().parent.parent / "puffer"
ALLOWED = PACKAGE / "backends"


def imported_modules(source: str, filename: str = "<string>", with_names: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in `source`, including `import_module`/`__import__` calls;
    `with_names` also lists `from a import b` as `a.b` (b may be a submodule)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if with_names else [])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                modules = [node.args[0].value]
        found += [(node.lineno, m) for m in modules]
    return found


def framework_imports(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, module) for every import of a framework in `source`."""
    return [(line, m) for line, m in imported_modules(source, filename) if m.split(".")[0] in FRAMEWORKS]


def _checked_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if ALLOWED not in p.parents)


def test_no_framework_imports_outside_backends():
    assert PACKAGE.is_dir(), f"puffer package not found at {PACKAGE}"
    offenders = []
    for path in _checked_files():
        for line, module in framework_imports(path.read_text(encoding="utf-8"), str(path)):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not offenders, "only puffer/backends/ may import torch, jax, jaxlib or tinygrad:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("import torch", ["torch"]),
        ("import numpy, jax.numpy as jnp", ["jax.numpy"]),
        ("from tinygrad.tensor import Tensor", ["tinygrad.tensor"]),
        ("from jaxlib import xla_client", ["jaxlib"]),
        ("def f():\n    try:\n        import torch.nn\n    except ImportError:\n        pass", ["torch.nn"]),
        ("import importlib\nimportlib.import_module('tinygrad')", ["tinygrad"]),
        ("__import__('jax')", ["jax"]),
        ("'''import torch'''\n# import jax\nx = 'from tinygrad import Tensor'", []),
        ("import torchvision_like_name_but_not\nfrom . import torch\nfrom .jax import x", []),
        ("from puffer.backends import torch_backend", []),
    ],
    ids=["import", "alias", "from", "jaxlib", "nested", "import_module", "dunder", "strings_comments",
         "lookalikes_relative", "puffer_module"],
)
def test_detector(source, expected):
    """The checker itself: real imports are found, text that merely mentions a framework is not."""
    assert [m for _, m in framework_imports(source)] == expected


def upper_layer_imports(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, module) for every import of `puffer.algos` (or `from puffer import algos`) in `source`."""
    return sorted({(line, m) for line, m in imported_modules(source, filename, with_names=True)
                   if m == "puffer.algos" or m.startswith("puffer.algos.")})


def test_machinery_and_storage_know_no_algorithm():
    """`puffer/train/` and `puffer/checkpoint.py` are the lower layers: they never import `puffer.algos`."""
    lower = sorted((PACKAGE / "train").rglob("*.py")) + [PACKAGE / "checkpoint.py"]
    assert len(lower) > 5, lower
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}" for path in lower
                 for line, module in upper_layer_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not offenders, "the machinery must let algorithms declare what they need:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source,expected", [
    ("from puffer.algos import ppo", ["puffer.algos", "puffer.algos.ppo"]),
    ("from puffer import algos", ["puffer.algos"]),
    ("def f():\n    import puffer.algos.ppo", ["puffer.algos.ppo"]),
    ("importlib.import_module('puffer.algos')", ["puffer.algos"]),
    ("'''from puffer.algos import PPO'''\nimport puffer.train", []),
])
def test_upper_layer_detector(source, expected):
    """The layer checker finds real imports of `puffer.algos` only."""
    assert [m for _, m in upper_layer_imports(source)] == sorted(expected)
