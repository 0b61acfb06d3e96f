"""The documentation a newcomer reads stays short, true to the code and free of dangling
references: the README's length, every citation of the design document, every relative link,
the configuration reference against `Settings`, and BENCHMARKS.md without a diary.
Pure text: nothing here imports the service."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"
README_MAX_LINES = 150

# Where documentation and citations live; build outputs, environments and data are skipped.
SCANNED_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".json", ".toml", ".lua", ".html", ".js"}
SCANNED_NAMES = {"Makefile", "Dockerfile"}
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "data", "bench_results",
                "build", "dist"}


def _scanned_files() -> list[Path]:
    found = []
    stack = [ROOT]
    while stack:
        folder = stack.pop()
        for path in folder.iterdir():
            if path.is_dir():
                if (path.name not in SKIPPED_DIRS and not path.name.startswith(".")
                        and not path.name.endswith(".egg-info")):
                    stack.append(path)
            elif ((path.suffix in SCANNED_SUFFIXES or path.name in SCANNED_NAMES)
                  and path != Path(__file__).resolve()):  # this file names the pattern itself
                found.append(path)
    return sorted(found)


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def _text(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.replace("\\u00a7", "§") if path.suffix == ".json" else text


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the README -------------------------------------------------------------------------------

def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it to {README_MAX_LINES}"


def test_readme_keeps_its_markers() -> None:
    readme = (ROOT / "README.md").read_text()
    # tests/test_quickstart.py runs the curl block against `make run`; the client example is
    # replaced by the real client's code between its markers.
    for marker in ("<!-- quickstart-curl", "<!-- /quickstart-curl -->",
                   "<!-- client-example -->", "<!-- /client-example -->"):
        assert readme.count(marker) == 1, f"README.md must hold {marker!r} exactly once"
    assert "make run" in readme and "make test" in readme


# --- citations of the design ------------------------------------------------------------------

def _design_sections() -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", DESIGN.read_text(), flags=re.M)}


def _cited_sections(after: str) -> list[int]:
    """The § numbers right after a citation: "§5", "§6, §7", "§6-7"."""
    match = re.match(r"\s*((?:§\s*\d+(?:\s*[-–]\s*\d+)?(?:\s*,\s*|\s+)?)+)", after)
    if not match:
        return []
    numbers = []
    for first, last in re.findall(r"§\s*(\d+)(?:\s*[-–]\s*(\d+))?", match.group(1)):
        numbers.extend(range(int(first), int(last or first) + 1))
    return numbers


def test_design_document_has_the_cited_sections() -> None:
    # Code comments cite these by number; each must still say what the code means.
    assert {1, 2, 3, 4, 5, 6, 7, 8} <= _design_sections()


def test_every_design_reference_resolves() -> None:
    sections = _design_sections()
    problems = []
    for path in _scanned_files():
        text = _text(path)
        for match in re.finditer(r"DESIGN", text):
            line = text.count("\n", 0, match.start()) + 1
            start = match.start()
            if text.startswith("docs/DESIGN.md", start - len("docs/")):
                for number in _cited_sections(text[match.end() + len(".md"):][:40]):
                    if number not in sections:
                        problems.append(f"{_rel(path)}:{line}: cites §{number}, which "
                                        "docs/DESIGN.md does not have")
            elif path.parent == ROOT / "docs" and text.startswith("](DESIGN.md", start - 2):
                continue  # a relative link from docs/: the link check resolves it
            else:
                problems.append(f"{_rel(path)}:{line}: {text[start:start + 20]!r} does not "
                                "name docs/DESIGN.md (cite it as 'docs/DESIGN.md §N')")
    assert not problems, "\n".join(problems)


# --- links ------------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, seen = set(), {}
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", _doc_files(), ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    problems = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{target}: no heading with the anchor #{anchor}")
    assert not problems, f"{_rel(doc)}:\n" + "\n".join(problems)


# --- configuration ----------------------------------------------------------------------------

def _settings_fields() -> list[str]:
    tree = ast.parse((ROOT / "service" / "config.py").read_text())
    settings = next(node for node in tree.body
                    if isinstance(node, ast.ClassDef) and node.name == "Settings")
    return [node.target.id for node in settings.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and not node.target.id.startswith("_") and node.target.id != "model_config"]


def test_every_setting_is_documented() -> None:
    fields = _settings_fields()
    assert len(fields) > 40, fields  # the parse found the class
    reference = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    missing = [f"MNEMO_{name.upper()}" for name in fields
               if f"`MNEMO_{name.upper()}`" not in reference]
    assert not missing, f"docs/CONFIGURATION.md lacks {missing}"
    rows = re.findall(r"^\| `(MNEMO_[A-Z0-9_]+)` \|", reference, flags=re.M)
    assert len(rows) == len(set(rows)), "a setting has two lines in docs/CONFIGURATION.md"
    assert sorted(rows) == sorted(f"MNEMO_{name.upper()}" for name in fields), \
        "docs/CONFIGURATION.md's tables must have exactly one line per Settings field"


# Names the contract reserves but the code does not implement yet (docs/DESIGN.md §4 says so),
# and what Kubernetes injects (not settings).
RESERVED = {"MNEMO_MODELS", "MNEMO_REDIS_MODE", "MNEMO_FEATURES"}


def test_docs_name_only_real_settings() -> None:
    known = {f"MNEMO_{name.upper()}" for name in _settings_fields()}
    problems = []
    for doc in _doc_files():
        for name in set(re.findall(r"MNEMO_[A-Z0-9_]*[A-Z0-9]", doc.read_text())):
            if name in known or name.startswith(("MNEMO_SERVICE", "MNEMO_PORT_")):
                continue
            if name in RESERVED and doc == DESIGN:
                continue
            problems.append(f"{_rel(doc)}: {name}")
    assert not problems, "names no setting has:\n" + "\n".join(sorted(problems))


# --- benchmarks -------------------------------------------------------------------------------

DIARY = [r"\bthis day\b", r"\bround \d", r"\bearlier (session|run|runs|today)\b", r"\bsession\b",
         r"\byesterday\b", r"\bmorning\b", r"\bafternoon\b", r"\bthe VM ran\b", r"\bpreviously\b",
         r"\bthe previous (run|session|calibration)\b", r"\b\d{1,2}:\d{2}\b", r"\bUTC\b",
         r"\bbefore this\b", r"\bsince then\b"]


def test_benchmarks_have_no_diary() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    found = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
             for pattern in DIARY for m in re.finditer(pattern, text, flags=re.I)]
    assert not found, "BENCHMARKS.md reads like a diary (history belongs to git):\n" + "\n".join(found)


def test_benchmark_sections_appear_once() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert len(headings) == len(set(headings)), "a benchmark appears twice"
    assert headings[0].startswith("Learning through the service")
    # The bench commands splice their tables between these markers; without them they would
    # append a second copy of the section.
    sources = [*(ROOT / "service" / "bench").glob("*.py"), *(ROOT / "load_tests").glob("*.py")]
    markers = {m for path in sources
               for m in re.findall(r'"(<!-- mnemo-bench[^"]*-->)"', path.read_text())}
    assert markers, "no splice markers found in the bench sources"
    for marker in markers:
        assert text.count(marker) == 1, f"BENCHMARKS.md must hold {marker!r} once"
