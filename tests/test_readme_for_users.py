"""The README is for users: short, every link resolves, its headline is the bundled data's, and
neither it nor docs/ talks about how the project is developed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 300
# Words about how the project is built, not about the product or the hardware.
DEVELOPMENT_WORDS = re.compile(r"\b(sessions?|lent|device time|issues?)\b", re.IGNORECASE)
# [text](target) and ![alt](target), with an optional "title"; <img src="target">.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]+src=\"([^\"]+)\"")


def relative_links(markdown: str) -> list[str]:
    """Every link target that is a path in this repository (no URL, no in-page anchor)."""
    targets = [a or b for a, b in LINK.findall(markdown)]
    return [t.split("#")[0] for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def development_words(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for number, line in enumerate(path.read_text().splitlines(), 1) if DEVELOPMENT_WORDS.search(line)]


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; reference material belongs in docs/"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_never_speak_of_how_the_project_is_developed(path):
    assert not development_words(path), development_words(path)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(path):
    links = relative_links(path.read_text())
    missing = [link for link in links if not (path.parent / link).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_links_the_generated_results_and_shows_a_screenshot():
    links = relative_links(README.read_text())
    assert "docs/results.md" in links
    assert any(link.startswith("docs/screens/") and link.endswith(".png") for link in links)


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in README.read_text().splitlines()


def headline_row(backend: str, dtype: str) -> dict[str, str]:
    """The H200 protocol-2 seed-pair row of docs/results.md's headline table, by column name."""
    results = (ROOT / "docs" / "results.md").read_text()
    table = results.split("### Headline", 1)[1].split("\n\n")[2].splitlines()
    header = [c.strip() for c in table[0].strip("|").split(" | ")]
    for line in table[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        row = dict(zip(header, cells))
        if "NVIDIA H200" in row["regime"] and "host" in row["regime"] and row["backend"] == backend and row["dtype"] == dtype:
            return row
    raise AssertionError(f"no H200 protocol-2 {backend} {dtype} row in the headline of docs/results.md")


@pytest.mark.parametrize("backend", ["hf-eager", "cuda-graph"])
def test_readme_headline_quotes_the_generated_results(backend):
    row = headline_row(backend, "float32")
    readme = README.read_text()
    for figure in (row["ratio"].removesuffix("x"), row["95% CI"], f"{row['runs']} runs"):
        assert figure in readme, f"README's headline lacks {figure!r} ({backend} float32 in docs/results.md)"


def equal_parameter_rows() -> list[dict[str, str]]:
    """The depth rows of docs/results.md's 'At equal parameters' table, by column name."""
    results = (ROOT / "docs" / "results.md").read_text()
    section = results.split("### At equal parameters", 1)[1].split("\n### ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split(" | ")]
    rows = [dict(zip(header, [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])) for line in table[2:]]
    return [row for row in rows if row["comparison"] == "depth"]


def test_readme_equal_parameter_figures_are_the_generated_ones():
    readme = README.read_text()
    cpu = [row for row in equal_parameter_rows() if "Intel" in row["device"] and "de86c054" in row["device"]
           and row["backend"] == "hf-sdpa" and "llama" in row["shape"]]
    assert len(cpu) == 2, cpu  # one KV head and three
    for row in cpu:
        figure = f"**{row['ratio']}** {row['95% CI'].rstrip('†')}"
        assert figure in readme, f"README lacks {figure!r} (the equal-parameter row of docs/results.md)"
