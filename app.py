"""shapebench dashboard: `streamlit run app.py`.

Routes the pages, draws the sidebar (dataset + global filters, mirrored in the URL) and
hands each page a context. Hosted read-only mode (SHAPEBENCH_HOSTED=1 or a secret) drops
the Run page and never imports torch.
"""
import streamlit as st

from dashboard import ui

st.set_page_config(page_title="shapebench", page_icon=":material/speed:", layout="wide")

ctx = ui.sidebar()
pages = [
    st.Page("pages/overview.py", title="Overview", url_path="overview", icon=":material/dashboard:", default=True),
    st.Page("pages/explore.py", title="Explore", url_path="explore", icon=":material/table:"),
    st.Page("pages/depth_width.py", title="Depth vs width", url_path="depth-width", icon=":material/stacked_line_chart:"),
    st.Page("pages/inversions.py", title="Inversions", url_path="inversions", icon=":material/swap_vert:"),
    st.Page("pages/regimes.py", title="Regimes", url_path="regimes", icon=":material/compare:"),
    st.Page("pages/snapshots.py", title="Snapshots", url_path="snapshots", icon=":material/archive:"),
]
if not ctx.hosted:
    pages.insert(1, st.Page("pages/run.py", title="Run", url_path="run", icon=":material/play_arrow:"))
st.navigation(pages).run()
