"""Documentation points only at what the repository holds: no file outside it (`../shared/...`, design notes
that were never part of it)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".toml", ".txt", ".json"}
OUTSIDE = re.compile(r"\.\./shared/|\bnotes/[\w-]+\.md\b|\blad-method\.md\b")


def _text_files():
    top = [ROOT / n for n in ("README.md", "ARCHITECTURE.md", "pyproject.toml", "Makefile")]
    found = [p for d in ("docs", "lakd", "launchers", "slurm", "shards", "tests", "benchmarks", ".ci")
             for p in (ROOT / d).rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return [p for p in top + found if p.is_file()]


def test_no_reference_to_files_outside_the_repository():
    files = _text_files()
    assert len(files) > 50  # the listing worked
    me = Path(__file__).resolve()
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files if p != me
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)
