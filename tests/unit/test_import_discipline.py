"""Import discipline: cdiflow's own modules are imported at the top of a module, and only
the heavy libraries are imported inside functions.

The rule, for every module under ``platform/cdiflow`` (``import`` statements inside a
function or method body are the "lazy" ones; ``if TYPE_CHECKING:`` blocks are ignored):

- a lazy import of a library in ``ALLOWED_LAZY`` (or one of its submodules) is fine;
- in the CLI layer (``CLI_LAYER``: the modules ``cdiflow --help`` imports, since it
  builds every verb's parser), a lazy import of a cdiflow module or of numpy is fine
  when ``--help`` does not load that module otherwise: a verb's ``run`` loads its
  implementation, ``--help`` does not;
- any other lazy import (a ``cdiflow`` module, the standard library, numpy, h5py, ...)
  fails, named ``file:line``, unless it carries the escape hatch: a comment
  ``# lazy: <reason>`` with a non-empty reason, either at the end of one of the
  statement's lines or alone on the line directly above it (a comment line above an
  import covers it and the imports that follow it without other code in between);
- each hatch must be needed: importing what it covers at the top would make this
  module load, at import, a library of ``ALLOWED_LAZY`` that it does not load today
  (its top-level imports, followed through cdiflow's own modules). A hatch that no
  longer defers anything fails, so the hatches stay few.

Import cycles are not a reason for a lazy import: tests/unit/test_import_graph.py counts
lazy imports too. ``EXEMPT_FILES`` (empty) would list modules not converted yet.

Why a test and not ruff's ``PLC0415`` (import-outside-top-level): it exempts only the
modules that ``TID253`` bans at module level, which would ban the top-level torch imports
of every torch module, and it has no hatch that must give a reason or be needed.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "cdiflow"

# Libraries that may be imported inside functions, each deferred on purpose. Times:
# `python -X importtime`, after numpy, on a loaded 2-core machine; `cdiflow --help`
# imports the CLI and every verb module in about 0.1 s.
ALLOWED_LAZY = {
    "torch",  # about 3 s; the CLI, tracking/registry and the Ray driver code stay torch-free
    "ray",  # about 0.8 s, and starts nothing until asked
    "mlflow",  # about 3.5 s; tracking and registry import it only when they talk to MLflow
    "matplotlib",  # pyplot about 1.1 s, and it picks a backend at import
    "scipy",  # scipy.ndimage about 0.4 s, scipy.stats about 1.6 s, each for one function
    "pyarrow",  # pyarrow.fs / .parquet about 0.1 s: formats.location is on the --help path
    #            and reaches pyarrow.fs only for remote (s3://) locations
    "numba",  # about 0.5 s, and LLVM behind it: only the phasing loop's CPU kernels need it
    "pyfftw",  # about 0.2 s after numpy and scipy (FFTW's libraries): only the CPU loop's FFTs
}
# Light enough to import at the top (same measure): h5py 50 ms, tifffile 40 ms, yaml 25 ms,
# psutil 25 ms, PIL 15-60 ms, tqdm 65 ms, skimage.restoration.unwrap_phase 10 ms (skimage
# loads its submodules lazily itself); optuna is reached only through ray.tune.

# The modules `cdiflow --help` imports: cdiflow.cli and every verb module (module prefixes).
CLI_LAYER = ("cdiflow.cli", "cdiflow.commands")

# Files the rule does not read yet (paths relative to platform/cdiflow, glob patterns):
# none; every module follows it.
EXEMPT_FILES: tuple[str, ...] = ()

HATCH = re.compile(r"#\s*lazy:\s*\S")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, bool, ast.stmt | None]]:
    """(statement, lazy, the import statement just before it in the same body or None)."""
    out = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            previous = None
            for child in block:
                if _type_checking(child):
                    previous = None
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    out.append((child, lazy, previous))
                    previous = child
                    continue
                previous = None
                inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                visit(child, inner)

    visit(tree, False)
    return out


def _targets(stmt: ast.stmt, module: str, is_package: bool) -> list[str]:
    """Module names the statement loads: cdiflow modules in full, others as written."""
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names]
    base = stmt.module or ""
    if stmt.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - stmt.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in stmt.names if f"{base}.{a.name}" in MODULES]


def _loaded(name: str) -> set[str]:
    """What importing ``name`` loads by name: the module and its parent packages."""
    parts = name.split(".")
    if parts[0] != "cdiflow":
        return {parts[0]}
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _parse() -> dict[str, list[tuple[ast.stmt, bool, ast.stmt | None, list[str]]]]:
    out = {}
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        out[name] = [
            (stmt, lazy, previous, _targets(stmt, name, is_package))
            for stmt, lazy, previous in _imports(ast.parse(path.read_text()))
        ]
    return out


PARSED = _parse()


def _top_level_closure() -> dict[str, set[str]]:
    """Per module: everything its import loads (cdiflow modules followed, others by root)."""
    direct = {}
    for name, imports in PARSED.items():
        deps = _loaded(name) - {name}
        for _, lazy, _, targets in imports:
            if not lazy:
                for target in targets:
                    deps |= _loaded(target)
        direct[name] = deps
    closure = {}
    for name in direct:
        seen, todo = set(), [name]
        while todo:
            for dep in direct.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        closure[name] = seen
    return closure


CLOSURE = _top_level_closure()


def _loads(names: set[str]) -> set[str]:
    """Everything that importing all of ``names`` at the top loads."""
    loaded = set()
    for name in names:
        loaded |= _loaded(name) | CLOSURE.get(name, set())
    return loaded


def _weight(names: set[str]) -> set[str]:
    """The ALLOWED_LAZY libraries that importing all of ``names`` loads."""
    return {n for n in _loads(names) if n in ALLOWED_LAZY}


def _in_cli_layer(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in CLI_LAYER)


HELP_LOADS = _loads({name for name in MODULES if _in_cli_layer(name)})


def _kept_out_of_help(targets: list[str]) -> bool:
    """A CLI-layer lazy import that keeps a cdiflow module, or numpy, out of --help."""
    wanted = [t for t in targets if t.split(".")[0] in ("cdiflow", "numpy")]
    return len(wanted) == len(targets) and any(t not in HELP_LOADS for t in wanted)


def _exempt(path: Path) -> bool:
    relative = path.relative_to(PACKAGE).as_posix()
    return any(fnmatch.fnmatch(relative, pattern) for pattern in EXEMPT_FILES)


def _check(module: str, where: str, lines: list[str], imports) -> tuple[list[str], int]:
    """(one message per offending import or idle hatch, number of `# lazy:` hatches used)."""
    problems = []
    block: dict[int, int] = {}  # import -> line of the `# lazy:` comment line above its block
    hatched: dict[int, tuple[int, set[str]]] = {}  # hatch line -> (first import line, targets)
    for stmt, lazy, previous, targets in imports:
        above = lines[stmt.lineno - 2].strip() if stmt.lineno >= 2 else ""
        if HATCH.match(above):
            block[id(stmt)] = stmt.lineno - 1
        elif previous is not None and id(previous) in block:
            block[id(stmt)] = block[id(previous)]
        if not lazy or all(t.split(".")[0] in ALLOWED_LAZY for t in targets):
            continue
        if _in_cli_layer(module) and _kept_out_of_help(targets):
            continue
        span = range(stmt.lineno, stmt.end_lineno + 1)
        trailing = [n for n in span if HATCH.search(lines[n - 1])]
        hatch = trailing[0] if trailing else block.get(id(stmt))
        if hatch is None:
            problems.append(
                f"{where}:{stmt.lineno}: import {targets[-1]} at the top of the module "
                f"(lazy imports are for {', '.join(sorted(ALLOWED_LAZY))}; "
                "else `# lazy: <reason>`)"
            )
            continue
        first, covered = hatched.setdefault(hatch, (stmt.lineno, set()))
        covered |= set(targets)
    for hatch, (first, covered) in sorted(hatched.items()):
        if not _weight(covered) - _weight({module}):
            problems.append(
                f"{where}:{first}: `# lazy:` (line {hatch}) defers nothing heavy: "
                f"{', '.join(sorted(covered))} load none of {sorted(ALLOWED_LAZY)} that "
                "this module does not load already; import at the top"
            )
    return problems, len(hatched)


def violations() -> tuple[list[str], int]:
    """Every offending import in the package, and the number of `# lazy:` hatches."""
    problems, hatches = [], 0
    for name, path in MODULES.items():
        if _exempt(path):
            continue
        where = path.relative_to(PACKAGE.parent).as_posix()
        found, n = _check(name, where, path.read_text().splitlines(), PARSED[name])
        problems += found
        hatches += n
    return problems, hatches


def test_imports_inside_functions_are_only_the_heavy_libraries():
    assert len(PARSED) > 50 and PARSED["cdiflow.pipelines.cluster"]  # the walk found them
    problems, _ = violations()
    assert not problems, "\n".join(problems)


def _fake(source: str, top_level: set[str], name: str = "cdiflow._fake_for_the_test"):
    imports = [
        (stmt, lazy, previous, _targets(stmt, name, False))
        for stmt, lazy, previous in _imports(ast.parse(source))
    ]
    CLOSURE[name] = top_level
    try:
        return _check(name, "fake.py", source.splitlines(), imports)
    finally:
        del CLOSURE[name]


def test_the_rule_catches_what_it_should():
    source = (
        "import numpy as np\n"
        "from cdiflow.errors import InputError\n"
        "\n"
        "\n"
        "def f():\n"
        "    import json\n"  # 6: standard library inside a function: caught
        "    import torch\n"  # 7: allowed
        "    from cdiflow.errors import CdiflowError\n"  # 8: cdiflow, no hatch: caught
        "    from cdiflow.metrics import chi2  # lazy: torch\n"  # 9: hatch, defers torch
        "    # lazy: numpy, already loaded here\n"
        "    import numpy\n"  # 11: hatch that defers nothing: caught
        "\n"
        "    from pyarrow import fs  # 13: allowed\n"
        "    x = 1\n"
        "    from cdiflow.models import ModelConfig\n"  # 15: code in between ends the block
        "    return np, InputError, json, torch, CdiflowError, chi2, numpy, fs, x, ModelConfig\n"
    )
    problems, hatches = _fake(source, {"numpy", "cdiflow", "cdiflow.errors"})
    assert sorted(int(p.split(":")[1]) for p in problems) == [6, 8, 11, 15], problems
    assert hatches == 2


def test_a_lazy_comment_line_covers_the_imports_after_it_up_to_other_code():
    source = (
        "def f():\n"
        "    # lazy: torch; the CLI imports this module for --help\n"
        "    from cdiflow.losses import physics_loss\n"
        "\n"
        "    from cdiflow.metrics import chi2\n"
        "    return physics_loss, chi2\n"
        "\n"
        "\n"
        "def g():\n"
        "    from cdiflow.metrics import chi2\n"
        "    return chi2\n"
    )
    problems, hatches = _fake(source, {"cdiflow"})
    assert [int(p.split(":")[1]) for p in problems] == [10], problems
    assert hatches == 1


def test_the_cli_layer_imports_a_verb_s_implementation_inside_run():
    source = (
        "def run(args):\n"
        "    import json\n"  # 2: standard library: caught
        "    import numpy as np\n"  # 3: --help loads no numpy: fine
        "\n"
        "    from cdiflow.errors import InputError\n"  # 5: --help loads it anyway: caught
        "    from cdiflow.pipelines.tune import run_sweep\n"  # 6: kept out of --help: fine
        "    return json, np, InputError, run_sweep\n"
    )
    assert "cdiflow.errors" in HELP_LOADS and "cdiflow.pipelines.tune" not in HELP_LOADS
    problems, hatches = _fake(source, {"cdiflow", "cdiflow.commands"}, "cdiflow.commands._fake")
    assert [int(p.split(":")[1]) for p in problems] == [2, 5], problems
    assert hatches == 0


def test_cli_help_loads_nothing_weighty():
    """Every verb module is imported to build `cdiflow --help`: they stay this light."""
    heavy = sorted(ALLOWED_LAZY | {"numpy"})
    code = (
        "import sys\n"
        "import cdiflow.cli\n"
        "cdiflow.cli.build_parser()\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
