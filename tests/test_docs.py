"""The README's and docs/*.md's Python code blocks run as written, and the docs stay in the repo.

Convention (also in docs/conventions.md, "Code blocks in the docs"):

* Every fenced block whose info string starts with ``python`` is executed, in file order, in one
  namespace per file (like a doctest session), in a fresh temporary working directory.
* A block that needs objects the prose only names (``model``, ``X``...) gets them from a hidden
  HTML comment placed right before it, so the rendered page shows only the example::

      <!-- docs-test setup: why this setup exists
      import torch
      model = torch.nn.Linear(3, 1)
      -->

* A block that another test already runs (e.g. one needing an optional extra) is marked with
  ``<!-- docs-test elsewhere: tests/test_x.py -->`` right above it; that file must read this one.
* A block that cannot run here is fenced as ```` ```python no-run: <reason> ````; the reason is
  required (a test fails without one). GitHub still highlights it as Python.

Setups use tiny data so that every file runs in a second or two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
_SETUP = re.compile(r"<!--\s*docs-test setup:(?P<why>[^\n]*)\n(?P<code>.*?)-->", re.DOTALL)
_ELSEWHERE = re.compile(r"<!--\s*docs-test elsewhere:\s*(?P<test>\S+)\s*-->")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str
    setup: str  # hidden setup code placed right before the block ("" if none)
    elsewhere: str = ""  # the test file that runs this block instead ("" if none)

    @property
    def language(self) -> str:
        return self.info.split(":")[0].split()[0] if self.info.strip() else ""

    @property
    def no_run_reason(self) -> str | None:
        words = self.info.split(None, 1)
        if len(words) < 2 or not words[1].startswith("no-run"):
            return None
        return words[1][len("no-run") :].lstrip(":").strip()

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a markdown file, each with the hidden setup right before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i, last_end = 0, 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m["fence"], m["info"].strip(), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        between = "\n".join(lines[last_end:start]) + "\n"
        setups = list(_SETUP.finditer(between))
        # Only a setup comment directly above the fence (blank lines allowed) belongs to it.
        setup = ""
        if setups and not between[setups[-1].end() :].strip():
            setup = setups[-1]["code"]
        others = list(_ELSEWHERE.finditer(between))
        elsewhere = ""
        if others and not between[others[-1].end() :].strip():
            elsewhere = others[-1]["test"]
        code = "\n".join(line[len(m["indent"]) :] for line in lines[start + 1 : j])
        blocks.append(Block(path, start + 1, info, code, setup, elsewhere))
        i = last_end = j + 1
    return blocks


def _python_blocks(path: Path) -> list[Block]:
    return [b for b in extract_blocks(path) if b.language == "python"]


def _files_with_python() -> list[Path]:
    return [p for p in DOC_FILES if _python_blocks(p)]


def test_the_extractor_finds_setup_and_no_run_blocks(tmp_path):
    md = tmp_path / "x.md"
    md.write_text(
        "# t\n\n<!-- docs-test setup: data\nx = 2\n-->\n```python\ny = x + 1\n```\n\n"
        "text\n\n```python no-run: needs a GPU\nboom()\n```\n\n```console\n$ ls\n```\n"
        "<!-- docs-test setup: not directly above\nz = 1\n-->\nprose\n```python\nx\n```\n"
    )
    blocks = extract_blocks(md)
    assert [(b.language, b.line) for b in blocks] == [
        ("python", 6),
        ("python", 12),
        ("console", 16),
        ("python", 23),
    ]
    assert blocks[0].setup.strip() == "x = 2" and blocks[0].code == "y = x + 1"
    assert blocks[0].no_run_reason is None
    assert blocks[1].no_run_reason == "needs a GPU"
    assert blocks[3].setup == ""  # prose between the comment and the fence


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_run_blocks_say_why(path):
    for block in _python_blocks(path):
        if "no-run" in block.info:
            assert block.no_run_reason, f"{block.where}: ```python no-run needs a reason"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", _files_with_python(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_as_written(path, tmp_path, monkeypatch):
    """Each file's python blocks, with their hidden setups, run in one namespace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(ROOT / "src"))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in _python_blocks(path):
        if block.no_run_reason is not None or block.elsewhere:
            continue
        for label, source in (("setup before", block.setup), ("block at", block.code)):
            if not source.strip():
                continue
            try:
                exec(compile(source, f"{block.where} ({label})", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - re-raised with the doc location
                raise AssertionError(
                    f"{label} {block.where} fails as written: {type(exc).__name__}: {exc}"
                ) from exc
        ran += 1
    assert ran or all(b.no_run_reason or b.elsewhere for b in _python_blocks(path))


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_blocks_run_elsewhere_name_a_test_that_reads_this_file(path):
    for block in _python_blocks(path):
        if block.elsewhere:
            test = ROOT / block.elsewhere
            assert test.is_file(), f"{block.where}: {block.elsewhere} does not exist"
            assert path.name in test.read_text(), f"{block.elsewhere} does not read {path.name}"


# --------------------------------------------------------------------------- links

_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_OUTSIDE = re.compile(r"(?<![\w/.-])(?:\.\./)+shared/|(?<![\w.-])shared/CONVENTIONS\.md")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_point_only_inside_the_repository(path):
    """Relative links resolve to files in the repo; nothing names the team's shared/ folder."""
    text = path.read_text(encoding="utf-8")
    for m in _LINK.finditer(text):
        target = m["target"]
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # http(s)/mailto links and in-page anchors
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name}: {target} points outside the repo"
        assert resolved.exists(), f"{path.name}: {target} does not exist"
    outside = [line for line in text.splitlines() if _OUTSIDE.search(line)]
    assert not outside, f"{path.name} points to shared/ (not in the repository): {outside[:2]}"
