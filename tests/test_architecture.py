"""The house's rules that a linter cannot see in one file (README, "The layout"):

* the layers and the absence of import circles are import-linter's contracts
  (``pyproject.toml``), run here as ``make lint`` runs them;
* every module imports on its own, in an interpreter where no other first-party module
  is loaded yet (an import circle shows up as a half-initialised module; the metrics
  registry is process-wide, so it is unloaded too);
* no module hides an import of ours inside a function (the way a circle gets hidden),
  and none imports another module's private names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ground.settings import REPO_ROOT

PACKAGES = ("metricx", "pipelines", "notifier", "pollers", "serving", "copilot", "domain", "adapters", "ground",
            "schemas")
SKIP = ("schemas.migrations", "metricx.cli.__main__")  # Alembic's environment; the entry point itself


def modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
            if not name.startswith(SKIP):
                out.append((name, path))
    return out


def test_the_import_contracts_hold() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_module_imports_on_its_own() -> None:
    names = [name for name, _ in modules()]
    code = (
        "import importlib, sys\n"
        f"names, first = {names!r}, {(*PACKAGES, 'prometheus_client')!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in first]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == ""


def test_no_import_of_ours_inside_a_function_and_no_private_name_across_modules() -> None:
    problems = []
    for name, path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").split(".")[0] in PACKAGES:
                        problems.append(f"{name}:{inner.lineno}: imports {inner.module} inside a function")
                    if isinstance(inner, ast.Import):
                        problems += [f"{name}:{inner.lineno}: imports {a.name} inside a function"
                                     for a in inner.names if a.name.split(".")[0] in PACKAGES]
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                problems += [f"{name}:{node.lineno}: imports the private {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert problems == []
