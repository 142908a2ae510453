"""docs/results.md, the generated results the README links to, is exactly what the analysis command says about
the bundled data."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from analysis.readme_results import RESULTS_PAGE, results_markdown
from store.snapshot import open_snapshot

ROOT = Path(__file__).resolve().parent.parent


def test_results_page_matches_the_analysis_of_the_bundled_snapshot():
    results = RESULTS_PAGE.read_text()
    match = re.search(r"<!-- results:start -->\n(.*?)<!-- results:end -->", results, re.S)
    assert match, f"{RESULTS_PAGE.relative_to(ROOT)} has no results section between the markers"
    con = open_snapshot(ROOT / "data" / "snapshot")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the analysis of the bundled data runs without warnings
        generated = results_markdown(con)
    assert match.group(1) == generated, ("regenerate the part between the markers of docs/results.md with: "
                                         "python -m runner analyze --markdown")


def test_bundled_snapshot_passes_its_manifest_check():
    con = open_snapshot(ROOT / "data" / "snapshot")
    runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    assert runs >= 1
