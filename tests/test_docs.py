"""Every Python block in README.md and docs/ runs, so the documentation cannot go stale.

Each page's ```python blocks run in order, in one namespace (a page reads like one
script), in a temporary working directory. A block opts out only with a comment on the
line before its fence, ``<!-- skip-test: reason -->``; the reason is required, a skipped
block must still compile, and skips stay rare (see ``MAX_SKIPS``).

The site's structure is checked here too (no mkdocs needed): every page is in the nav,
every public module has an API page generated from its docstrings.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import factorkit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SKIP = re.compile(r"^\s*<!--\s*skip-test:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)")
MAX_SKIPS = 4
DOCS_EXTRA = "needs the docs extra: pip install -e '.[docs]'"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of ``page`` whose language is ``python``."""
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence["indent"], i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        if end == len(lines):
            raise AssertionError(f"{page.name}:{start + 1}: unclosed code fence")
        if fence["lang"] == "python":
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            skip = SKIP.match(before)
            body = "\n".join(line.removeprefix(indent) for line in lines[start + 1 : end])
            yield Block(page, start + 1, textwrap.dedent(body), skip["reason"] if skip else None)
        i = end + 1


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [p for p in PAGES if any(b.skip_reason is None for b in blocks(p))]


def test_the_pages_are_found() -> None:
    # Guards the discovery: a broken parser would make the snippet test vacuous.
    assert ROOT / "README.md" in RUNNABLE
    assert DOCS / "quickstart.md" in RUNNABLE
    assert sum(1 for p in PAGES for _ in blocks(p)) >= 10


@pytest.mark.parametrize("page", RUNNABLE, ids=page_id)
def test_page_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"__docs_{page.stem}__"}
    for block in blocks(page):
        if block.skip_reason is not None:
            continue
        code = compile(block.code, f"{page_id(page)}:{block.line}", "exec")
        exec(code, namespace)


def test_skipped_snippets_give_a_reason_compile_and_stay_rare() -> None:
    skipped = [b for p in PAGES for b in blocks(p) if b.skip_reason is not None]
    assert len(skipped) <= MAX_SKIPS, [f"{b.page.name}:{b.line}" for b in skipped]
    for block in skipped:
        assert block.skip_reason, f"{block.page.name}:{block.line}: skip-test needs a reason"
        compile(block.code, f"{page_id(block.page)}:{block.line}", "exec")


def test_the_block_parser_honours_skip_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\na = 1\n```\n<!-- skip-test: needs CUDA -->\n\n"
        "```python\nb = 2\n```\n```bash\nls\n```\n- item\n    ```python\n    c = 3\n    ```\n"
    )
    found = list(blocks(page))
    assert [(b.line, b.code, b.skip_reason) for b in found] == [
        (2, "a = 1", None),
        (7, "b = 2", "needs CUDA"),
        (14, "c = 3", None),
    ]


def nav_text() -> str:
    return (ROOT / "mkdocs.yml").read_text()


def test_every_page_is_in_the_nav() -> None:
    nav = nav_text().split("\nnav:\n", 1)[1]
    listed = set(re.findall(r"([\w/-]+\.md)\s*$", nav, flags=re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == listed


def test_every_public_module_has_an_api_page() -> None:
    modules = sorted(
        m.name for m in pkgutil.iter_modules(factorkit.__path__) if not m.name.startswith("_")
    )
    for name in modules:
        page = DOCS / "api" / f"{name}.md"
        assert page.is_file(), f"no API page for factorkit.{name}"
        assert f"::: factorkit.{name}\n" in page.read_text()
    pages = sorted(p.stem for p in (DOCS / "api").glob("*.md") if p.stem != "index")
    assert pages == modules


def prose(page: Path) -> str:
    """The page without fenced code blocks and inline code (links live in prose)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def test_relative_links_point_to_existing_files() -> None:
    for page in PAGES:
        text = prose(page)
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page_id(page)}: broken link {target}"


def test_examples_do_not_need_a_gpu() -> None:
    # The snippets run on CPU-only CI: device-specific code must be guarded or skipped.
    for page in PAGES:
        for block in blocks(page):
            if block.skip_reason is None and '"cuda"' in block.code:
                assert "torch.cuda.is_available()" in block.code, f"{page.name}:{block.line}"


# ------------------------------------------------ Sphinx roles -> links (griffe extension)

PACKAGE = {
    "__init__.py": '''"""Top: :class:`~pkg.Thing`, :class:`Thing`, :func:`pkg.core.helper`,
:func:`torch.where`, :meth:`!Thing.run`, :func:`ask <pkg.core.helper>`, :mod:`pkg.core`."""
from pkg.core import Thing, helper
''',
    "core.py": '''"""Core."""
class Thing:
    """A thing; see :meth:`run`, :py:func:`helper()` and :class:`Nowhere`."""
    def run(self):
        """Run; see :class:`Thing` and :func:`_private`."""
def helper():
    """Help."""
def _private():
    """Hidden."""
''',
}


def test_sphinx_roles_become_autorefs_links(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    griffe = pytest.importorskip("griffe", reason=DOCS_EXTRA)
    from tools.griffe_sphinx_roles import SphinxRoles

    (tmp_path / "pkg").mkdir()
    for name, text in PACKAGE.items():
        (tmp_path / "pkg" / name).write_text(text)
    pkg = griffe.load(
        "pkg", search_paths=[tmp_path], extensions=griffe.load_extensions(SphinxRoles)
    )
    assert pkg.docstring.value == (
        "Top: [`Thing`][pkg.core.Thing], [`Thing`][pkg.core.Thing], "
        "[`pkg.core.helper`][pkg.core.helper],\n`torch.where`, `Thing.run`, "
        "[`ask`][pkg.core.helper], [`pkg.core`][pkg.core]."
    )
    thing = pkg["core.Thing"]
    assert thing.docstring.value == (
        "A thing; see [`run`][pkg.core.Thing.run], [`helper`][pkg.core.helper] and `Nowhere`."
    )
    assert thing["run"].docstring.value == "Run; see [`Thing`][pkg.core.Thing] and `_private`."
    # Only the unresolvable name of the package's own is reported (it fails a strict build).
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["pkg.core.Thing: :class:`Nowhere` does not resolve to an object of pkg"]


# ------------------------------------------------------------------------ the built site

RAW_ROLE = re.compile(r":(?:py:)?[a-z]+:(?:`|<code>)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation built with ``mkdocs build --strict`` (any warning fails it)."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mathjax"):
        pytest.importorskip(module, reason=DOCS_EXTRA)
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    return out


def site_pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): p.read_text() for p in sorted(site.rglob("*.html"))}


def test_the_site_shows_no_raw_sphinx_role(site: Path) -> None:
    raw = {page: RAW_ROLE.findall(html) for page, html in site_pages(site).items()}
    assert {page: found for page, found in raw.items() if found} == {}


def test_cross_references_link_to_existing_anchors(site: Path) -> None:
    links = 0
    for page, html in site_pages(site).items():
        for href in re.findall(r'<a class="autorefs autorefs-internal"[^>]*href="([^"]*)"', html):
            path, _, anchor = href.partition("#")
            target = (site / page).parent / path / ("index.html" if path.endswith("/") else "")
            target = target if path else site / page
            assert target.is_file(), (page, href)
            assert f'id="{anchor}"' in target.read_text(), (page, href)
            links += 1
    # The API pages cross-reference each other from dozens of docstrings.
    assert links >= 50


def test_the_site_loads_no_script_style_or_font_from_elsewhere(site: Path) -> None:
    mathjax = 0
    for page, html in site_pages(site).items():
        sources = re.findall(r'<script[^>]*\bsrc="([^"]*)"', html)
        sources += re.findall(r'<link[^>]*rel="(?:stylesheet|preconnect)"[^>]*href="([^"]*)"', html)
        for src in sources:
            assert "://" not in src and not src.startswith("//"), (page, src)
            base = site if src.startswith("/") else (site / page).parent  # 404.html: from /
            assert (base / src.split("?")[0].lstrip("/")).is_file(), (page, src)
        mathjax += any(src.endswith("javascripts/mathjax/tex-chtml.js") for src in sources)
    assert mathjax == len(site_pages(site))
    # MathJax's CommonHTML output loads its web fonts relative to the script.
    fonts = site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert {"MathJax_Main-Regular.woff", "MathJax_Math-Italic.woff"} <= {
        p.name for p in fonts.iterdir()
    }


def test_the_fidelity_page_covers_every_component() -> None:
    table = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (DOCS / "fidelity.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| Component")
    ]
    assert all(len(row) == 4 and all(row) for row in table), table
    components = " / ".join(row[0] for row in table).lower()
    for component in (
        "generators",
        "decoders",
        "encoders",
        "objective",
        "kernel",
        "estimator",
        "prior",
        "surrogate",
        "training schedule",
        "interpretation",
    ):
        assert component in components, component
