"""Run: build a plan, start it as a subprocess, follow it live, cancel it.

The runner runs as `python -m runner run PLAN --no-ingest` in its own process group; this
page never touches torch itself (except to list backend capabilities on request) and
ingests the run directory as cells finish.
"""

import pandas as pd
import streamlit as st

from analysis.load import finished_runs
from analysis.predict import samples_needed
from analysis.run_results import display_frame, run_results
from dashboard import cache, plan_builder, runs, source, ui
from dashboard.text import md
from runner.models import REGISTRY
from runner.plan import BACKEND_NAMES, MeasureSettings
from vocabulary import DTYPES, PROTOCOL_VERSION, STOP_BUDGET

POLL_S = 1.5  # progress refresh: events are written once per cell, so faster buys nothing
DEFAULTS = MeasureSettings()
FORM_MODE, TOML_MODE = "Build a plan", "Write or upload a plan (TOML)"
# the form's initial values: the TOML editor starts from their plan when the form built none
FORM_DEFAULTS = {"name": "dashboard", "reference": ["tiny-gpt2"], "backends": ["hf-eager"], "dtypes": ["float32"],
                 "batch_sizes": "1", "prompt_lens": "16", "gen_lens": "8", "device": "auto"}


def _slot(slots: dict, key: str) -> None:
    """A place right under an input for its validation message (filled once the plan is built)."""
    slots[key] = st.empty()


@cache.cached_query()
def run_history(ctx: cache.Context) -> pd.DataFrame:
    """Finished runs of the open dataset (analysis.load.finished_runs), once per data version."""
    with ctx.reading() as con:
        return finished_runs(con)


@st.cache_data(show_spinner=False)
def _host_class() -> str:
    """This machine's host class (runner.host: /proc/cpuinfo, no torch), to find its own earlier runs."""
    from runner.host import host_fingerprint

    return host_fingerprint()["host_class"]


def _estimate_text(ctx: cache.Context, built: plan_builder.BuiltPlan) -> str:
    device = built.cells[0].device if built.cells else "cpu"
    history = plan_builder.history_estimate(built, run_history(ctx), _host_class(), PROTOCOL_VERSION)
    if history is None:
        return (f"roughly **{runs.format_eta(built.estimate_s)}** ({device.upper()} rough estimate, not a measurement: "
                "no finished run on this machine to learn from yet)")
    which = "runs of this plan" if history.same_plan else "runs"
    return (f"about **{runs.format_eta(history.seconds)}** (between {runs.format_eta(history.low_s)} and "
            f"{runs.format_eta(history.high_s)}: an estimate from {history.runs} earlier {which} on this machine)")


@st.cache_data(show_spinner="Probing backends (imports torch)...")
def _capabilities() -> pd.DataFrame:
    from runner.capabilities import backend_capabilities

    return pd.DataFrame(backend_capabilities())


def _form(ctx: cache.Context) -> plan_builder.BuiltPlan:
    form: dict = {}
    slots: dict = {}
    c1, c2 = st.columns([3, 2])
    with c1:
        form["name"] = st.text_input("Plan name", value="dashboard", key="run_name")
        _slot(slots, "name")
        st.markdown("**Models**")
        form["reference"] = st.multiselect(
            "Reference models", list(REGISTRY), default=["tiny-gpt2"], key="run_reference",
            help="; ".join(f"{n}: {s.n_layer} x {s.n_embd}" for n, s in REGISTRY.items()))
        _slot(slots, "reference")
        g1, g2, g3 = st.columns([2, 2, 1])
        form["depths"] = g1.text_input("Grid depths", value="", key="run_depths", placeholder="e.g. 1, 2, 4, 8")
        form["widths"] = g2.text_input("Grid widths", value="", key="run_widths", placeholder="e.g. 64, 128, 256")
        form["n_head"] = g3.number_input("Heads", min_value=1, max_value=64, value=2, key="run_heads")
        _slot(slots, "depths")
        _slot(slots, "widths")
        form["checkpoint"] = st.text_input("Local checkpoint directory (GPT-2, safetensors)", value="", key="run_ckpt")
        _slot(slots, "checkpoint")
        _slot(slots, "models")
    with c2:
        st.markdown("**Where and how**")
        form["device"] = st.selectbox("Device", ["auto", "cuda", "cpu"], key="run_device")
        form["backends"] = st.multiselect("Backends", list(BACKEND_NAMES), default=["hf-eager"], key="run_backends")
        _slot(slots, "backends")
        form["dtypes"] = st.multiselect("dtypes", list(DTYPES), default=["float32"], key="run_dtypes")
        _slot(slots, "dtypes")
        form["batch_sizes"] = st.text_input("Batch sizes", value="1", key="run_batch")
        _slot(slots, "batch_sizes")
        p1, p2 = st.columns(2)
        form["prompt_lens"] = p1.text_input("Prompt lengths", value="16", key="run_prompt")
        form["gen_lens"] = p2.text_input("Generation lengths", value="8", key="run_gen")
        _slot(slots, "prompt_lens")
        _slot(slots, "gen_lens")

    st.markdown("**Repetitions**")
    r1, r2, r3, r4 = st.columns(4)
    form["prefill_reps"] = r1.number_input("Prefill reps", 1, 10_000, DEFAULTS.prefill_reps, key="run_prefill")
    form["decode_reps"] = r2.number_input("Decode reps (x gen length steps)", 1, 10_000, DEFAULTS.decode_reps, key="run_decode")
    form["e2e_reps"] = r3.number_input("End-to-end reps", 1, 10_000, DEFAULTS.e2e_reps, key="run_e2e")
    form["repeats"] = r4.number_input("Repeat the whole plan", 1, 100, 1, key="run_repeats",
                                      help="independent runs of the same plan: run-to-run spread")
    _slot(slots, "reps")
    _power_hint(ctx, int(form["prefill_reps"]), int(form["e2e_reps"]))

    built = plan_builder.build(form)
    for key, message in built.errors.items():
        (slots.get(key) or st).error(message, icon=":material/error:")
    return built


def _toml_editor() -> plan_builder.BuiltPlan:
    """A plan written or uploaded as TOML, validated as the runner validates it, each message
    right under the editor with the plan field it names."""
    upload = st.file_uploader("Upload a plan (.toml)", type=["toml"], key="run_plan_upload", max_upload_size=1)
    if upload is not None and st.session_state.get("_run_plan_upload_id") != upload.file_id:
        st.session_state["_run_plan_upload_id"] = upload.file_id  # load an upload once, then let it be edited
        st.session_state["run_plan_toml"] = upload.getvalue().decode("utf-8", errors="replace")
    if "run_plan_toml" not in st.session_state:  # start from what the form had built, else its defaults
        st.session_state["run_plan_toml"] = st.session_state.get("_run_form_toml") or plan_builder.build(FORM_DEFAULTS).toml
    text = st.text_area("Plan (TOML)", key="run_plan_toml", height=360,
                        help="the runner's plan format (plans/*.toml); checked as `python -m runner run` checks it")
    built = plan_builder.from_toml(text)
    for key, message in built.errors.items():
        st.error(f"**{md(key)}**: {md(message.split(':', 1)[-1].strip() if message.startswith(key) else message, 2000)}",
                 icon=":material/error:")
    return built


def _power_hint(ctx: cache.Context, prefill_reps: int, e2e_reps: int) -> None:
    cv_default = 0.05
    if ctx.summary["ok"]:
        frame = cache.cell_frame(ctx)
        if len(frame):
            cv_default = float(round(frame["cv"].median(), 3)) or cv_default
    with st.expander("How many samples do I need?", expanded=False):
        h1, h2 = st.columns(2)
        cv = h1.number_input("Expected coefficient of variation", 0.001, 2.0, cv_default, step=0.01, format="%.3f",
                             key="power_cv", help="median CV of the open dataset when there is one")
        diff = h2.number_input("Smallest relative difference to detect", 0.005, 1.0, 0.05, step=0.01, format="%.3f",
                               key="power_diff")
        n = samples_needed(cv, diff)
        text = (f"To tell apart two cells whose medians differ by {diff:.1%} at CV {cv:.3f} (95% confidence, "
                f"80% power) you need about **{n} samples per cell**.")
        short = [name for name, reps in (("prefill", prefill_reps), ("end-to-end", e2e_reps)) if reps < n]
        if short:
            st.warning(text + f" The {' and '.join(short)} reps are below that.")
        else:
            st.success(text)
        st.caption("Decode steps within one generation are correlated: count decode reps, not steps, when in doubt.")


def _start(ctx: cache.Context, built: plan_builder.BuiltPlan) -> None:
    """Launch the run; what the last start said (its error, its results) stays on the page until this one."""
    st.session_state.pop("_run_start_error", None)
    st.session_state.pop("_run_outcome", None)
    try:
        st.session_state["_run_launch"] = runs.start(built.toml, built.plan.name, ctx.runs_dir,
                                                     ray_address=st.session_state.get("run_ray_address") or None)
        st.session_state["_run_active"] = True
    except Exception as error:  # noqa: BLE001 - a lock or a spawn failure, shown on the page
        st.session_state["_run_start_error"] = str(error)


def _resume(ctx: cache.Context, run_id: str) -> None:
    try:
        runs.resume(run_id, ctx.runs_dir)
        st.session_state["_run_active"] = True
    except Exception as error:  # noqa: BLE001 - a lock, a run no longer interrupted, a spawn failure
        st.session_state["_run_resume_error"] = str(error)


@st.fragment(run_every=POLL_S)
def _live(ctx: cache.Context) -> None:
    """Progress of the active run (and any CLI run), ingesting finished cells as they land."""
    try:
        report = source.ingest_runs(ctx.store, ctx.runs_dir)
        if report["cells_added"]:
            st.toast(f"Ingested {report['cells_added']} new cell(s) into {ctx.store}")
    except Exception as error:  # noqa: BLE001 - e.g. the store is locked by another process
        st.warning(f"Could not ingest yet: {str(error).splitlines()[0][:200]}")
    lock = runs.read_lock()
    launched = st.session_state.get("_run_launch")
    if launched and (not lock or lock.get("pid") != launched.get("pid")):
        # the run started here has ended: keep how (its results, or the runner's own error line) for the page
        st.session_state["_run_outcome"] = runs.launch_outcome(launched)
        del st.session_state["_run_launch"]
        st.session_state["_run_active"] = False
        st.rerun(scope="app")
    if bool(runs.measuring_refusal()) != st.session_state.get("_run_measuring_shown", False):
        st.rerun(scope="app")  # a run began or ended elsewhere (a terminal): redraw Start with its reason
    was_active = st.session_state.get("_run_active", False)
    if lock:
        st.session_state["_run_active"] = True
        run_dir = runs.find_run_dir(lock)
        if run_dir is None:
            st.info(f"Starting {md(lock.get('plan_name'))} (pid {lock['pid']}): loading torch and building the first model...")
            lines = runs.log_tail(lock["log"])
            if lines:
                st.code("\n".join(lines), language=None)
        else:
            p = runs.progress(run_dir)
            st.progress(p["fraction"], text=runs.progress_text(p))
            if p["busy"]:
                st.warning(p["busy"])
            st.markdown(f"Run {md(p['run_id'])} on {md(p['regime'])}: " + (f"measuring **{md(p['current'])}**" if p["current"] else "between cells"))
            st.code("\n".join(p["recent"]) or "no events yet", language=None)
        if st.button("Cancel run", type="secondary", key="run_cancel"):
            st.toast(runs.cancel(int(lock["pid"])))
            st.session_state.pop("_run_launch", None)  # cancelled here: no error to report
            st.session_state["_run_active"] = False
            source.ingest_runs(ctx.store, ctx.runs_dir)
            st.rerun(scope="app")
    elif was_active:
        st.session_state["_run_active"] = False
        st.rerun(scope="app")  # the run ended: refresh the sidebar and every cached view

    history = runs.list_runs(ctx.runs_dir)
    if not history:
        st.caption(f"No runs under {ctx.runs_dir} yet. Runs started with `python -m runner run PLAN` show up here too.")
        return
    for p in history:
        if p["status"] == "running" and not lock:
            st.info(f"Run {md(p['run_id'])} ({md(p['plan_name'])}) is running outside the dashboard: "
                    f"{p['done']} / {p['total']} cells, ETA {runs.format_eta(p['eta_s'])}.")
    table = pd.DataFrame(history)[["run_id", "plan_name", "status", "done", "total", "failed", "regime"]]
    st.dataframe(table.head(15), hide_index=True, key="run_history")
    resume_error = st.session_state.pop("_run_resume_error", None)
    if resume_error:
        st.error(resume_error)
    for p in [p for p in history if p["status"] == "interrupted"][:3]:  # the latest few: older ones are in the table
        spent = ", budget spent" if p.get("stop_reason") == STOP_BUDGET else ""
        st.button(f"Resume {p['run_id']} ({p['done']} / {p['total']} cells done{spent})", key=f"run_resume_{p['run_id']}",
                  disabled=bool(lock), on_click=_resume, args=(ctx, p["run_id"]),
                  help="one run at a time on this machine" if lock else
                  "runner run PLAN --resume RUN_ID: its finished cells are kept, the rest are measured")
    last = runs.log_tail(lock["log"], 4) if lock else []
    if last:
        st.caption("runner output: " + " / ".join(last))


def _last_start(ctx: cache.Context) -> None:
    """What the last Start led to, until the next Start: why it failed (the runner's own line),
    or the finished run's results and a link to it on the Runs page."""
    start_error = st.session_state.get("_run_start_error")
    if start_error:
        st.error(md(start_error, 600), icon=":material/error:")
    outcome: runs.LaunchOutcome | None = st.session_state.get("_run_outcome")
    if outcome is None:
        return
    if outcome.ok:
        st.success(f"Run {md(outcome.run_id)} finished.", icon=":material/check_circle:")
    else:
        st.error(f"The run did not {'finish' if outcome.run_id else 'start'}: {md(outcome.message, 600)}",
                 icon=":material/error:")
    if outcome.run_id is None:
        return
    try:
        results = run_results(ctx.runs_dir / outcome.run_id)
    except FileNotFoundError as error:
        st.warning(md(error, 400))
        return
    st.markdown(f"**Results of run {md(outcome.run_id)}**: median decode ms per token, 95% CI across rounds")
    st.dataframe(display_frame(results), hide_index=True, key="run_results")
    st.page_link("app_pages/runs.py", label=f"Open run {outcome.run_id} on the Runs page", icon=":material/history:",
                 query_params={runs.RUN_PARAM: outcome.run_id})


def body(ctx: cache.Context) -> None:
    st.title("Run a plan")
    st.caption(f"Runs go to `{ctx.runs_dir}` and are ingested into the store file `{ctx.store}` as cells finish"
               + ("" if ctx.kind == source.STORE else " (open the store file in the sidebar to analyse them)") + ".")
    mode = st.radio("Plan", [FORM_MODE, TOML_MODE], horizontal=True, key="run_mode", label_visibility="collapsed")
    if mode == FORM_MODE:
        built = _form(ctx)
        if built.ok:
            st.session_state["_run_form_toml"] = built.toml
    else:
        built = _toml_editor()
    if built.ok:
        n = len(built.cells) * built.plan.repeats
        st.markdown(f"**{n} cell{'s' if n != 1 else ''}**, {_estimate_text(ctx, built)}.")
        with st.expander("Plan (TOML)", expanded=False):
            st.code(built.toml, language="toml")
        st.download_button("Download plan", built.toml, f"{built.plan.name}.toml", "application/toml", on_click="ignore")
    lock = runs.read_lock()
    measuring = runs.measuring_refusal()
    st.session_state["_run_measuring_shown"] = bool(measuring)
    blocked = ("A run started from the dashboard is measuring (progress below): one run at a time on this machine."
               if lock else measuring)
    st.text_input("Ray cluster (optional)", key="run_ray_address", placeholder="local, auto or ray://host:10001",
                  help="Send the cells to a Ray cluster instead of running them here: one task per (model, backend) "
                       "group, one whole GPU per task. Leave empty to run on this machine.")
    if blocked:
        st.warning(md(blocked, 600), icon=":material/block:")
    st.button("Start run", type="primary", disabled=not built.ok or bool(blocked), on_click=_start, args=(ctx, built),
              key="run_start", help=blocked)
    _last_start(ctx)
    with st.expander("Backends on this machine", expanded=False):
        if st.toggle("Probe backends (imports torch in the server)", key="run_probe"):
            st.dataframe(_capabilities(), hide_index=True)
    st.subheader("Progress")
    _live(ctx)


ui.guard(body)
