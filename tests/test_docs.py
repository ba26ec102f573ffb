"""The documentation cites only what the repository holds: every relative link resolves, and every
file the text names in backticks (a repository path, or a bare `*.md` / `*.txt` name) exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "results" / "published" / "README.md", *(ROOT / "docs").glob("*.md")])
TOP_LEVEL = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
NAMED = re.compile(r"`([A-Za-z0-9_./-]+\.(?:py|md|csv|yaml|json|txt|toml))`")
REPO_FILES = {p.name for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts}


def _exists(doc: Path, target: str) -> bool:
    return any((base / target).exists() for base in (doc.parent, ROOT, ROOT / "idefics_eval"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = [t for t in LINK.findall(doc.read_text()) if "://" not in t and not t.startswith("mailto:") and not _exists(doc, t)]
    assert not broken, f"{doc.name} links to missing files: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(doc):
    missing = []
    for name in NAMED.findall(doc.read_text()):
        if "/" in name:  # a repository path (paths of other projects, e.g. visdialch/metrics.py, are not checked)
            if name.split("/")[0] in TOP_LEVEL | {"metrics", "demo", "formats", "canary"} and not _exists(doc, name):
                missing.append(name)
        elif name.endswith((".md", ".txt")) and name not in REPO_FILES:
            missing.append(name)
    assert not missing, f"{doc.name} names files the repository does not hold: {missing}"


def test_the_check_catches_a_missing_file(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see [a](nowhere.md) and `PROTOCOL.md`")
    assert LINK.findall(doc.read_text()) == ["nowhere.md"] and not _exists(doc, "nowhere.md")
    assert "PROTOCOL.md" in NAMED.findall(doc.read_text()) and "PROTOCOL.md" not in REPO_FILES
