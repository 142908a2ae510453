"""shapebench dashboard: `streamlit run app.py`.

Routes the pages, draws the sidebar (dataset + global filters, mirrored in the URL) and
hands each page a context. Hosted read-only mode (SHAPEBENCH_HOSTED=1 or a secret) drops
the Run page and never imports torch.

The page scripts live in pages/views/, not directly in pages/: Streamlit (1.67) treats a
`pages/` folder beside the entrypoint as a v1 multipage app until app.py has run once in
the process, and would run a top-level pages/<name>.py alone (without this sidebar) for a
deep link such as /explore on a fresh server. With no top-level scripts there, that first
deep link falls back to app.py, which routes it (after a "Page not found" notice).
"""
import streamlit as st

from dashboard import ui

st.set_page_config(page_title="shapebench", page_icon=":material/speed:", layout="wide")

ctx = ui.sidebar()
pages = [
    st.Page("pages/views/overview.py", title="Overview", url_path="overview", icon=":material/dashboard:", default=True),
    st.Page("pages/views/explore.py", title="Explore", url_path="explore", icon=":material/table:"),
    st.Page("pages/views/depth_width.py", title="Depth vs width", url_path="depth-width", icon=":material/stacked_line_chart:"),
    st.Page("pages/views/inversions.py", title="Inversions", url_path="inversions", icon=":material/swap_vert:"),
    st.Page("pages/views/regimes.py", title="Regimes", url_path="regimes", icon=":material/compare:"),
    st.Page("pages/views/why.py", title="Why is it slow", url_path="why", icon=":material/troubleshoot:"),
    st.Page("pages/views/reproducibility.py", title="Reproducibility", url_path="reproducibility", icon=":material/repeat:"),
    st.Page("pages/views/runs.py", title="Runs", url_path="runs", icon=":material/history:"),
    st.Page("pages/views/snapshots.py", title="Snapshots", url_path="snapshots", icon=":material/archive:"),
]
if not ctx.hosted:
    pages.insert(1, st.Page("pages/views/run.py", title="Run", url_path="run", icon=":material/play_arrow:"))
st.navigation(pages).run()
