"""The experiments on the public API import only it: `qsharp_ext`, `qsharp_ext.tasks`, `qsharp_ext.io` and
`qsharp_ext.plots` (qsharp_ext/__init__.py says why); the studies of the library's parts are listed in
python/README.md and may import what they study."""

import ast
from pathlib import Path

import pytest

import qsharp_ext

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"
PACKAGE = Path(qsharp_ext.__file__).parent
PUBLIC = ("qsharp_ext", "qsharp_ext.tasks", "qsharp_ext.io", "qsharp_ext.plots")
ON_THE_PUBLIC_API = ("stargraph.py", "stargraph_policy.py")


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_library_modules(source: str) -> set[str]:
    """Every qsharp_ext module a source imports; `from qsharp_ext import x` counts as qsharp_ext.x when x is a
    module (`from qsharp_ext import training` reaches the inside as surely as `import qsharp_ext.training`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qsharp_ext":
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if is_module(n)} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "qsharp_ext"}
    return found


def is_public(module: str) -> bool:
    return any(module == p or (p != "qsharp_ext" and module.startswith(p + ".")) for p in PUBLIC)


@pytest.mark.parametrize("script", ON_THE_PUBLIC_API)
def test_experiments_on_the_public_api_import_only_it(script):
    inside = sorted(m for m in imported_library_modules((PYTHON_DIR / script).read_text()) if not is_public(m))
    assert inside == [], f"{script} imports the library's inside: {inside}"


def test_the_check_sees_an_import_of_the_inside():
    lines = [
        "from qsharp_ext.scoring import cache_kwarg", "import qsharp_ext.training", "from qsharp_ext import metrics",
    ]  # fmt: skip
    source = "\n".join([*lines, "from qsharp_ext import ValueModel", "from qsharp_ext.io import write_json"])
    inside = sorted(m for m in imported_library_modules(source) if not is_public(m))
    assert inside == ["qsharp_ext.metrics", "qsharp_ext.scoring", "qsharp_ext.training"]


def test_every_python_program_is_in_the_readme():
    readme = (PYTHON_DIR / "README.md").read_text()
    assert all(f"`{p.name}`" in readme for p in PYTHON_DIR.glob("*.py"))
