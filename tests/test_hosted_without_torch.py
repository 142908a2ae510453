"""Hosted mode in a real virtual environment without torch: every page renders, read-only."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import importlib.util, os, sys
    assert importlib.util.find_spec("torch") is None, "torch is installed in the hosted venv"
    assert importlib.util.find_spec("transformers") is None
    os.environ["SHAPEBENCH_HOSTED"] = "1"
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file("app.py", default_timeout=120).run()
    assert not at.exception, at.exception
    pages = sorted(p.name for p in (__import__("pathlib").Path("app_pages")).glob("*.py"))
    assert "run.py" in pages
    for page in pages:
        if page == "run.py":
            continue
        at.switch_page(f"app_pages/{page}").run()
        assert not at.exception, (page, at.exception)
    print("HOSTED-OK", len(pages) - 1, "pages")
""")


@pytest.mark.slow
def test_hosted_dashboard_runs_in_a_venv_without_torch(tmp_path):
    venv = tmp_path / "hosted-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-hosted.txt")],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    done = subprocess.run([str(python), "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "HOSTED-OK" in done.stdout
