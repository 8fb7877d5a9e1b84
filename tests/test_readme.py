"""The README's and the docs pages' Python examples run as written (a tour that errors is worse than
none). Each page runs in its own namespace, its blocks in order."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path):
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks(ROOT / "README.md")) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_examples_run(page):
    namespace = {}
    for i, block in enumerate(python_blocks(page)):
        try:
            exec(compile(block, f"{page.name} block {i}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{page.name} python block {i} fails: {exc!r}\n{block}") from exc


def test_links_to_local_files_resolve():
    """Every relative link of the README and the docs names a file that exists."""
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
