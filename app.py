"""shapebench dashboard: `streamlit run app.py`.

Routes the pages, draws the sidebar (dataset + global filters, mirrored in the URL) and
hands each page a context. Hosted read-only mode (SHAPEBENCH_HOSTED=1 or a secret) drops
the Run page and never imports torch.

The page scripts live in app_pages/, not pages/: Streamlit (1.67) treats a `pages/` folder
beside the entrypoint as a v1 multipage app until app.py has run once in the process, so a
deep link such as /explore on a fresh server would run the page alone, without this
sidebar (PagesManager.uses_pages_directory; AppTest re-detects it on every run).
"""
import streamlit as st

from dashboard import ui

st.set_page_config(page_title="shapebench", page_icon=":material/speed:", layout="wide")

ctx = ui.sidebar()
pages = [
    st.Page("app_pages/overview.py", title="Overview", url_path="overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/explore.py", title="Explore", url_path="explore", icon=":material/table:"),
    st.Page("app_pages/depth_width.py", title="Depth vs width", url_path="depth-width", icon=":material/stacked_line_chart:"),
    st.Page("app_pages/inversions.py", title="Inversions", url_path="inversions", icon=":material/swap_vert:"),
    st.Page("app_pages/regimes.py", title="Regimes", url_path="regimes", icon=":material/compare:"),
    st.Page("app_pages/snapshots.py", title="Snapshots", url_path="snapshots", icon=":material/archive:"),
]
if not ctx.hosted:
    pages.insert(1, st.Page("app_pages/run.py", title="Run", url_path="run", icon=":material/play_arrow:"))
st.navigation(pages).run()
