"""The Python examples in docs/*.md run.

Each page's ```python blocks run in order in one namespace (a page is one script). A block
whose preceding non-blank line is ``<!-- gpu -->`` runs only where CUDA is usable.
"""

import pathlib
import re

import pytest

import scitensor as st

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GPU_MARKER = "<!-- gpu -->"

pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="not run from a source checkout")


def _blocks(text):
    """``(line, needs_gpu, code)`` for every ```python block of a Markdown text."""
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        before = [ln.strip() for ln in text[:m.start()].splitlines() if ln.strip()]
        needs_gpu = bool(before) and before[-1] == GPU_MARKER
        out.append((text.count("\n", 0, m.start()) + 1, needs_gpu, m.group(1)))
    return out


PAGES = sorted(p for p in DOCS.rglob("*.md") if _blocks(p.read_text()))


def test_pages_found():
    names = {p.name for p in PAGES}
    assert {"quickstart.md", "autodiff.md", "custom-kernel.md"} <= names


def test_gpu_marker_is_seen():
    text = (DOCS / "custom-kernel.md").read_text()
    assert all(gpu for _, gpu, _ in _blocks(text))
    assert not any(gpu for _, gpu, _ in _blocks((DOCS / "quickstart.md").read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page):
    gpu_ok = st.cuda_status()[0]
    namespace = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for line, needs_gpu, code in _blocks(page.read_text()):
        if needs_gpu and not gpu_ok:
            continue
        exec(compile("\n" * (line) + code, str(page), "exec"), namespace)
        ran += 1
    if ran == 0:
        pytest.skip(f"every example on {page.name} needs a GPU: {st.cuda_status()[1]}")
