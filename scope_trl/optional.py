"""Optional dependencies: imported on use, and named with the `pip install` that provides them when missing.

The trainers need only the core dependencies. Plots (`matplotlib`, extra `plot`) and the benchmarks' statistics
(`scipy`, extra `benchmarks`) and the HTTP client of a served teacher (`requests`, extra `teacher-server`) are optional: a command that needs one and does not find it says which extra to
install, in one line, instead of failing with a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


# The distribution that provides each optional top-level module, and the extra of scope-trl that declares it.
OPTIONAL = {
    "matplotlib": ("matplotlib", "plot"),
    "scipy": ("scipy", "benchmarks"),
    "requests": ("requests", "teacher-server"),
}


class MissingOptionalDependency(ImportError):
    """An optional package is not installed; the message names the `pip install` to run."""


def import_optional(module: str, purpose: str) -> ModuleType:
    """Import `module` (e.g. `"matplotlib.pyplot"`), or raise `MissingOptionalDependency` naming the extra.

    `purpose` completes the sentence "... needs <package>", e.g. `"drawing the demo's training curves"`.
    """
    top = module.split(".")[0]
    if top not in OPTIONAL:
        raise ValueError(f"{top!r} is not one of scope-trl's optional dependencies: {', '.join(OPTIONAL)}.")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the package is there but one of its own dependencies is broken: show the real error
        package, extra = OPTIONAL[top]
        raise MissingOptionalDependency(
            f"{purpose} needs {package}, which is not installed: pip install 'scope-trl[{extra}]' "
            f"(or pip install {package})"
        ) from error


def import_pyplot(purpose: str) -> ModuleType:
    """`matplotlib.pyplot` on the headless `Agg` backend (no display on CI machines and servers), or
    `MissingOptionalDependency` as `import_optional` raises it."""
    import_optional("matplotlib", purpose).use("Agg")
    return import_optional("matplotlib.pyplot", purpose)
