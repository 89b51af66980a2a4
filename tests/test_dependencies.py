"""Every import of the project is declared in pyproject.toml, so that a fresh install satisfies it.

The project's own equivalent of `shared/tools/check_deps.py`: each third-party top-level module imported under
`scope_trl/`, `examples/`, `benchmarks/` and `tests/` must come from a distribution that the declared requirements
bring in (directly or transitively). The package itself must import only its core dependencies unguarded: optional
packages (plots, scipy) go through `scope_trl.optional.import_optional` or an `except ImportError` guard, so that a
user who installed `scope-trl` without extras never meets a traceback. CI runs these tests in a fresh virtual
environment (`make test`), where an undeclared package is simply absent and is reported here.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("scope_trl", "examples", "benchmarks", "tests")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirement_closure(requirements: list[str]) -> set[str]:
    """Canonical names of `requirements` and of everything they require in this environment (markers evaluated)."""
    found: set[str] = set()
    pending = [Requirement(text) for text in requirements]
    environment = default_environment()
    visited: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        requirement = pending.pop()
        name, extras = canonicalize_name(requirement.name), tuple(sorted(requirement.extras))
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        found.add(name)
        try:
            children = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: the import check below reports what it would have provided
        for text in children:
            child = Requirement(text)
            if child.marker is None or any(
                child.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
            ):
                pending.append(child)
    return found


def guarded_import_nodes(tree: ast.AST) -> set[int]:
    """ids of the import statements inside a `try` whose handlers catch ImportError (optional imports)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                caught |= {kind.id for kind in kinds if isinstance(kind, ast.Name)}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                guarded |= {id(sub) for stmt in node.body for sub in ast.walk(stmt)}
    return guarded


def third_party_imports(paths: list[Path], local: set[str]):
    """(path, line, top-level module) of every unguarded absolute import of a module outside stdlib and `local`."""
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded = guarded_import_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                    yield path, node.lineno, top


def undeclared_imports(paths: list[Path], requirements: list[str], local: set[str]) -> list[str]:
    allowed = requirement_closure(requirements) | {canonicalize_name(PROJECT["name"])}
    providers = metadata.packages_distributions()
    findings = []
    for path, line, module in third_party_imports(paths, local):
        distributions = {canonicalize_name(d) for d in providers.get(module, [])}
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line}"
        if not distributions:
            findings.append(f"{where}: '{module}' is not installed in this environment and no requirement provides it")
        elif not distributions & allowed:
            findings.append(f"{where}: '{module}' comes from {sorted(distributions)}, which no requirement brings in")
    return findings


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def local_modules() -> set[str]:
    """Top-level names that resolve to the repository itself: its folders, and scripts imported by their folder."""
    return {path.name for path in REPO.iterdir()} | {path.stem for path in python_files(*SCANNED)}


def all_requirements() -> list[str]:
    return [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]


def test_every_import_is_declared():
    findings = undeclared_imports(python_files(*SCANNED), all_requirements(), local_modules())
    assert not findings, "declare these in pyproject.toml (dependencies or an extra):\n" + "\n".join(findings)


def test_the_package_imports_only_core_dependencies_unguarded():
    """`pip install scope-trl` without extras must be able to import every module of the package."""
    findings = undeclared_imports(python_files("scope_trl"), PROJECT["dependencies"], local_modules())
    assert not findings, (
        "the package imports packages outside its core dependencies; import them through "
        "scope_trl.optional.import_optional (naming their extra) or declare them as core:\n" + "\n".join(findings)
    )


def test_the_check_catches_undeclared_and_honours_guards(tmp_path):
    source = tmp_path / "module.py"
    source.write_text(
        "import json\n"
        "import pip\n"  # installed in the environment, declared by nothing
        "from surely_not_a_real_package_ab12 import x\n"  # installed nowhere
        "import torch\n"  # declared
        "try:\n"
        "    import another_missing_package_cd34\n"
        "except ImportError:\n"
        "    pass\n"
    )
    findings = undeclared_imports([source], PROJECT["dependencies"], set())
    assert len(findings) == 2, findings
    assert "module.py:2: 'pip' comes from ['pip']" in findings[0]
    assert "module.py:3: 'surely_not_a_real_package_ab12' is not installed" in findings[1]


def test_optional_extras_cover_the_optional_modules():
    """Every module `scope_trl.optional` knows is declared by the extra it tells the user to install."""
    from scope_trl.optional import OPTIONAL

    extras = PROJECT["optional-dependencies"]
    for module, (package, extra) in OPTIONAL.items():
        assert any(Requirement(r).name == package for r in extras[extra]), (module, extra)


def test_a_missing_optional_package_names_the_install(monkeypatch):
    from scope_trl.optional import MissingOptionalDependency, import_optional

    for module in ("scipy", "scipy.stats"):  # `import scipy.stats` now fails as if scipy were not installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingOptionalDependency, match=r"t-tests needs scipy.*pip install 'scope-trl\[benchmarks\]'"):
        import_optional("scipy.stats", "t-tests")
    with pytest.raises(ValueError, match="not one of scope-trl's optional dependencies"):
        import_optional("pandas", "tables")
