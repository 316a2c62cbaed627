"""The layout holds its shape: import directions (DESIGN §1) and small modules.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` (import-linter) checks them
against the import graph grimp builds from the source, lazy imports included, so a cycle or a layer
crossed inside a function fails here as surely as one at the top of a module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600


def test_import_contracts_hold_and_every_one_is_checked() -> None:
    """One `lint-imports` run: the contracts hold, and all four were read (a contract that silently
    stopped being read, a typo in pyproject, would otherwise pass forever)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} is missing: install the test extra (pip install -e '.[test]')"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in done.stdout, done.stdout


def test_store_and_render_do_not_name_config_even_for_type_hints() -> None:
    """The contracts skip `if TYPE_CHECKING:` imports; the store and the renderers do not need even those
    (the store records a profile through the `Answerer` Protocol)."""
    offenders = [path.relative_to(ROOT).as_posix() for package in ("store", "render")
                 for path in (ROOT / "llmchat" / package).rglob("*.py")
                 if "llmchat.config" in path.read_text(encoding="utf-8")]
    assert not offenders, offenders


def test_no_module_over_600_lines() -> None:
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in (ROOT / "llmchat").rglob("*.py")}
    assert sizes, "no modules found"
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these by job (at most {MAX_LINES} lines each): {too_long}"


def test_every_package_says_what_it_is_for() -> None:
    """Each subpackage's __init__ docstring is its one line of responsibility (DESIGN §1's package map)."""
    packages = sorted(p.parent for p in (ROOT / "llmchat").rglob("__init__.py") if p.parent != ROOT / "llmchat")
    assert packages
    for package in packages:
        text = (package / "__init__.py").read_text(encoding="utf-8").lstrip()
        assert text.startswith('"""'), f"{package.name}/__init__.py has no docstring"
