"""Every public name is documented, shapes included, and its docstring examples run.

The public API is every name in ``factorkit.__all__`` plus every name in the ``__all__``
of each public module (``factorkit/<name>.py`` not starting with ``_``); the API
reference is generated from these docstrings (``docs/api/``).

The rules:

1. Every public module, class and function has a docstring of its own.
2. Every public method, property and classmethod defined on a public class has a
   docstring. ``forward`` needs its own (PyTorch's generic one says nothing); another
   method that overrides a documented base-class method (``extra_repr``, a subclass's
   implementation of an abstract method) may inherit that docstring.
3. A public callable that takes or returns tensors has a ``Shapes:`` block. "Takes or
   returns tensors" is read from the annotations: a function whose parameters or return
   annotation mention ``Tensor``, ``FactorizedLatents`` or ``ArrayLike``; a class whose
   ``forward`` does (then the class docstring or ``forward``'s holds the block), or whose
   constructor does (a container such as ``FactorizedLatents``).
4. Every ``>>>`` example in those docstrings runs as a doctest, with ``torch`` and the
   public names of ``factorkit`` in scope, and prints what it shows.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import torch

import factorkit

TENSOR_WORDS = ("Tensor", "FactorizedLatents", "ArrayLike")


def public_modules() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(factorkit.__path__))
    return [importlib.import_module(f"factorkit.{n}") for n in names if not n.startswith("_")]


def public_objects() -> dict[str, Any]:
    """Qualified name -> object, for every public class and function."""
    found: dict[str, Any] = {}
    for name in factorkit.__all__:
        obj = getattr(factorkit, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for module in public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return dict(sorted(found.items()))


PUBLIC = public_objects()
CLASSES = {k: v for k, v in PUBLIC.items() if inspect.isclass(v)}


def own_doc(obj: Any) -> str:
    """The object's own docstring (not one inherited from a base class)."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def public_members(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Public methods and properties defined on ``cls`` itself."""
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, (classmethod, staticmethod)):
            yield name, attr.__func__
        elif isinstance(attr, property) and attr.fget is not None:
            yield name, attr.fget
        elif inspect.isfunction(attr):
            yield name, attr


def member_doc(cls: type, name: str, fn: Callable[..., Any]) -> str:
    """The docstring a reader gets: its own, or the overridden base method's (not forward)."""
    if name == "forward":
        return own_doc(fn)
    return own_doc(fn) or (inspect.getdoc(getattr(cls, name)) or "")


def mentions_tensors(fn: Callable[..., Any]) -> bool:
    """Whether a parameter or the return annotation of ``fn`` mentions a tensor type."""
    signature = inspect.signature(fn)
    annotations = [str(p.annotation) for p in signature.parameters.values()]
    annotations.append(str(signature.return_annotation))
    return any(word in a for a in annotations for word in TENSOR_WORDS)


def test_the_public_api_is_found() -> None:
    # Guards the discovery itself: a broken walk would make every other test vacuous.
    assert {"factorkit.heads.FactorizedHead", "factorkit.masks.fill_absent"} <= set(PUBLIC)
    assert len(PUBLIC) >= len([n for n in factorkit.__all__ if n != "__version__"])


@pytest.mark.parametrize("module", public_modules(), ids=lambda m: m.__name__)
def test_every_public_module_has_a_docstring(module: ModuleType) -> None:
    assert own_doc(module), f"{module.__name__} has no module docstring"


@pytest.mark.parametrize("name", list(PUBLIC))
def test_every_public_name_has_a_docstring(name: str) -> None:
    assert own_doc(PUBLIC[name]), f"{name} has no docstring"


@pytest.mark.parametrize("name", list(CLASSES))
def test_every_public_method_has_a_docstring(name: str) -> None:
    cls = CLASSES[name]
    missing = [m for m, fn in public_members(cls) if not member_doc(cls, m, fn)]
    assert not missing, f"{name}: methods without a docstring: {missing}"


def shape_docs(obj: Any) -> tuple[bool, str]:
    """Whether ``obj`` handles tensors, and the docstrings that may hold its Shapes block."""
    if inspect.isfunction(obj):
        return mentions_tensors(obj), own_doc(obj)
    forward = vars(obj).get("forward")
    takes = mentions_tensors(obj.__init__) or (forward is not None and mentions_tensors(forward))
    return takes, own_doc(obj) + "\n" + (own_doc(forward) if forward is not None else "")


@pytest.mark.parametrize("name", list(PUBLIC))
def test_tensor_callables_document_their_shapes(name: str) -> None:
    takes_tensors, docs = shape_docs(PUBLIC[name])
    if takes_tensors:
        assert "\nShapes:\n" in docs, f"{name} handles tensors but has no 'Shapes:' block"


def test_the_shapes_rule_sees_tensor_signatures() -> None:
    assert shape_docs(factorkit.FactorizedHead)[0]
    assert shape_docs(factorkit.FactorizedLatents)[0]
    assert shape_docs(factorkit.mae)[0]
    assert not shape_docs(factorkit.distributed.world_info)[0]


def doctest_globals(obj: Any) -> dict[str, Any]:
    """The defining module's namespace, plus ``torch`` and every public factorkit name."""
    module = importlib.import_module(obj.__module__)
    names = {n: getattr(factorkit, n) for n in factorkit.__all__}
    return {**vars(module), "torch": torch, "factorkit": factorkit, **names}


def examples() -> dict[str, tuple[Any, doctest.DocTest]]:
    finder = doctest.DocTestFinder(recurse=True)
    found = {}
    for obj in PUBLIC.values():
        for test in finder.find(obj):
            if test.examples:
                found[test.name] = (obj, test)
    return dict(sorted(found.items()))


EXAMPLES = examples()


def test_docstring_examples_are_found() -> None:
    assert any(name.endswith("FactorizedHead") for name in EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_docstring_examples_run(name: str) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    obj, test = EXAMPLES[name]
    test.globs = doctest_globals(obj)
    result = runner.run(test, out=lambda text: print(text, end=""))
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
