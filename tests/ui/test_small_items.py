"""The dashboard's small promises: the uploader states the limit that applies, exported PNGs name
what they show, the favicon is the app's own, kept results follow the code, an interrupted run resumes."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.ui.conftest import ROOT, fake_running_run, open_page
from tests.ui.live_server import CHROMIUM, streamlit_server


def test_snapshot_uploader_states_the_configured_limit_locally_and_the_upload_limit_hosted(app_env):
    configured = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    local = open_page(app_env(), "snapshots")
    assert [u.proto.max_upload_size_mb for u in local.get("file_uploader")] == [configured]
    assert any("50 MB" in c.value for c in local.caption), "opening read-only in a session has the upload limit"
    hosted = open_page(app_env(hosted=True), "snapshots")
    assert [u.proto.max_upload_size_mb for u in hosted.get("file_uploader")] == [50]


def test_exported_png_is_named_after_the_group_it_shows_and_says_it_in_the_figure(app_env):
    at = open_page(app_env(), "depth_width")
    group = at.selectbox(key="dw_group").value
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    for element in charts:
        options = json.loads(element.proto.config)["toImageButtonOptions"]
        spec = json.loads(element.proto.spec)
        title = spec["layout"]["title"]
        shown = (title.get("subtitle", {}).get("text") or title.get("text")).replace("<br>", " ")  # wrapped, not cut
        assert shown == group.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", group).strip("-")
        assert options["filename"] == f"shapebench-{slug}"[:161], "the file says regime, backend, phase and dtype"
        assert options["format"] == "png"


def test_a_pages_own_code_is_part_of_the_key_of_a_result_it_defines(tmp_path):
    from dashboard import results

    page = tmp_path / "page.py"
    page.write_text("x = 1\n")
    before = results.code_version(str(page))
    results.code_version.cache_clear()
    page.write_text("x = 2\n")
    assert results.code_version(str(page)) != before
    assert results.code_version() != before, "the page's file is hashed beside the shared results code"


def test_favicon_is_a_file_of_the_app_not_an_icon_name_fetched_from_a_font_server():
    source = (ROOT / "app.py").read_text()
    assert "page_icon=FAVICON" in source
    assert Path(ROOT / "dashboard" / "favicon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _interrupted_run(runs_dir: Path) -> str:
    """fake_running_run's run, then marked interrupted as the runner marks it on SIGTERM."""
    from runner.runfiles import RunDir

    path = fake_running_run(runs_dir, None)
    run = RunDir(path)
    meta = run.read_meta() | {"status": "interrupted", "plan": {"name": "in-progress", "device": "cpu"}}
    (path / "meta.json").write_text(json.dumps(meta))
    return run.run_id


def test_resume_launches_the_runner_with_resume_and_follows_the_same_run(tmp_path, monkeypatch):
    from dashboard import runs

    run_id = _interrupted_run(tmp_path)
    launched = []

    class Proc:
        pid = 4242

    monkeypatch.setattr(runs.subprocess, "Popen", lambda command, **kw: launched.append(command) or Proc())
    info = runs.resume(run_id, tmp_path, lock=tmp_path / "run.lock")
    command = launched[0]
    assert command[command.index("--resume") + 1] == run_id and "--no-ingest" in command
    assert tomllib.loads(Path(command[command.index("run") + 1]).read_text())["name"] == "in-progress"
    assert runs.find_run_dir(info).run_id == run_id, "progress follows the resumed run, not a new one"
    runs._PROCS.pop(Proc.pid, None)


def test_resume_refuses_a_run_that_is_not_interrupted(tmp_path):
    from dashboard import runs

    run_id = fake_running_run(tmp_path, None).name
    with pytest.raises(RuntimeError, match="not interrupted"):
        runs.resume(run_id, tmp_path, lock=tmp_path / "run.lock")


def test_run_page_offers_resume_for_an_interrupted_run_and_starts_it(app_env, tmp_path, monkeypatch):
    from dashboard import runs

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    run_id = _interrupted_run(runs_dir)
    resumed = []
    monkeypatch.setattr(runs, "resume", lambda rid, where: resumed.append((rid, Path(where))))
    at = open_page(app_env(runs=runs_dir), "run")
    button = at.button(key=f"run_resume_{run_id}")
    assert "2 / 5 cells done" in button.label and not button.disabled
    button.click().run()
    assert resumed == [(run_id, runs_dir)]


def test_a_plan_toml_is_validated_as_the_runner_validates_it_with_each_message_under_its_field():
    from dashboard import plan_builder

    good = plan_builder.build({"reference": ["tiny-gpt2"], "backends": ["hf-eager"], "dtypes": ["float32"],
                               "batch_sizes": "1", "prompt_lens": "16", "gen_lens": "8", "device": "cpu"}).toml
    assert plan_builder.from_toml(good).ok
    assert "toml" in plan_builder.from_toml("name = [").errors
    errors = plan_builder.from_toml(good.replace('"hf-eager"', '"nope"').replace('"float32"', '"f13"')).errors
    assert set(errors) == {"backends", "dtypes"}
    assert "allowed: hf-eager" in errors["backends"], "the allowed values stay with their message"


def test_run_page_edits_a_plan_as_toml_shows_errors_under_the_editor_and_starts_only_a_valid_one(app_env):
    at = open_page(app_env(), "run")
    at.radio(key="run_mode").set_value("Write or upload a plan (TOML)").run()
    editor = at.text_area(key="run_plan_toml")
    assert "tiny-gpt2" in editor.value, "the editor starts from the form's plan"
    valid = editor.value
    editor.set_value(valid.replace('"hf-eager"', '"nope"')).run()
    assert any("backends" in e and "unknown backend" in e for e in [str(x.value) for x in at.error])
    assert at.button(key="run_start").disabled
    at.text_area(key="run_plan_toml").set_value(valid).run()
    assert not at.error and not at.button(key="run_start").disabled
    assert at.get("file_uploader"), "a plan file can be uploaded into the editor"


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
def test_opening_the_dashboard_requests_nothing_from_another_server(page, tmp_path):
    """Favicon, fonts and icons come from the dashboard itself (the material favicon came from
    fonts.gstatic.com on every load)."""
    from urllib.parse import urlparse

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    with streamlit_server(tmp_path, tmp_path / "absent.duckdb") as base:
        page.goto(base)
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
        page.wait_for_selector("h1", timeout=60_000)
    outside = {u for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname not in ("localhost", "127.0.0.1")}
    assert requested and not outside, sorted(outside)
    assert any("/media/" in u for u in requested), "the favicon is served by the app"
