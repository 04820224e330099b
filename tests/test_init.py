import importlib
import pkgutil
import sys
from pathlib import Path

import factorkit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def public_modules() -> dict[str, object]:
    return {
        info.name: importlib.import_module(f"factorkit.{info.name}")
        for info in pkgutil.iter_modules(factorkit.__path__)
        if not info.name.startswith("_")
    }


def test_version_is_the_one_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert factorkit.__version__ == project["version"]


def test_every_exported_name_is_the_object_its_module_exports() -> None:
    modules = public_modules()
    exported = [name for name in factorkit.__all__ if name != "__version__"]
    assert len(exported) == len(set(exported)), "__all__ has no repeats"
    for name in exported:
        owners = [m for m, mod in modules.items() if name in getattr(mod, "__all__", ())]
        assert len(owners) == 1, f"{name} is exported by {owners}, expected exactly one module"
        module = modules[owners[0]]
        assert getattr(factorkit, name) is getattr(module, name), name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from factorkit import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(factorkit.__all__)


def test_every_public_module_has_an_api_page() -> None:
    for name in public_modules():
        page = ROOT / "docs" / "api" / f"{name}.md"
        assert page.is_file(), f"no API page for factorkit.{name}"
        assert f"::: factorkit.{name}" in page.read_text("utf-8"), page
