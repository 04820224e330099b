"""Every Python block in README.md and docs/ runs, so the documentation cannot go stale.

Each page's ```python blocks run in order, in one namespace (a page reads like one
script), in a temporary working directory. A block opts out only with a comment on the
line before its fence, ``<!-- skip-test: reason -->``; the reason is required, a skipped
block must still compile, and skips stay rare (see ``MAX_SKIPS``).

The site's structure is checked here too (no mkdocs needed): every page is in the nav,
every public module has an API page generated from its docstrings.
"""

from __future__ import annotations

import pkgutil
import re
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
