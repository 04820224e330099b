"""Griffe extension for the docs build: Sphinx cross-reference roles become autorefs links.

factorkit's docstrings name other objects the Sphinx way, e.g. ``:class:`~factorkit.ConcatFusion```.
mkdocstrings renders docstrings as Markdown, where such a role would show up raw. Once the
package is loaded, this extension rewrites every role in every docstring to a mkdocs-autorefs
link to the object's canonical path, ``[`ConcatFusion`][factorkit.fusion.ConcatFusion]``, which
the site renders as a link to the object's API entry. The docstrings themselves are unchanged.

A target is looked up as Sphinx would: as written, then relative to the docstring's class and
module, then relative to the package (so ``FactorizedHead`` and ``factorkit.FactorizedHead`` both
reach ``factorkit.heads.FactorizedHead``). ``~`` shows the last component only, ``!`` and private
objects give code without a link, and so do names outside the package (``torch.where``): the
site is built offline, without other projects' inventories. A name that looks like the
package's own (unqualified or under ``factorkit.``) but resolves to nothing is logged as a
warning, which fails ``mkdocs build --strict``.

Registered in ``mkdocs.yml`` under the python handler's ``options.extensions``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

LOGGER = griffe.get_logger("griffe.sphinx_roles")  # routed to mkdocs' logger by mkdocstrings

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|mod|data|obj|exc|const|type):"
    r"`(?P<body>[^`]+)`"
)
TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined under it (aliases, i.e. imports, are skipped)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


def _lookup(root: griffe.Module, path: str) -> griffe.Object | None:
    """The object at dotted ``path`` under ``root`` (aliases followed), or None."""
    if path == root.path:
        return root
    if not path.startswith(root.path + "."):
        return None
    try:
        found = root.get_member(path.removeprefix(root.path + "."))
        return found.final_target if found.is_alias else found  # type: ignore[no-any-return]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def resolve(root: griffe.Module, context: griffe.Object, name: str) -> griffe.Object | None:
    """The object ``name`` refers to from a docstring of ``context``, or None."""
    scopes = [context if context.is_class or context.is_module else context.parent]
    while scopes[-1] is not None and scopes[-1].parent is not None:
        scopes.append(scopes[-1].parent)
    candidates = [name.lstrip(".")] + [f"{s.path}.{name.lstrip('.')}" for s in scopes if s]
    for candidate in candidates:
        if (found := _lookup(root, candidate)) is not None:
            return found
    return None


def rewrite(text: str, root: griffe.Module, context: griffe.Object) -> str:
    """``text`` with each Sphinx role replaced by an autorefs link or inline code."""

    def replace(match: re.Match[str]) -> str:
        body = match["body"].strip()
        titled = TITLED.match(body)
        target = titled["target"] if titled else body
        no_link = target.startswith("!")
        target = target.lstrip("!")
        short = target.startswith("~")
        target = target.lstrip("~").removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if short else target
        title = titled["title"] if titled else shown
        found = None if no_link else resolve(root, context, target)
        if found is None or any(part.startswith("_") for part in found.path.split(".")):
            internal = "." not in target.lstrip(".") or target.startswith(root.path + ".")
            if found is None and internal and not no_link:
                LOGGER.warning(
                    "%s: %s does not resolve to an object of %s",
                    context.path,
                    match[0],
                    root.path,
                )
            return f"`{title}`"
        return f"[`{title}`][{found.path}]"

    return ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package into autorefs links."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value, pkg, obj)
