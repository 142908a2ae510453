"""shapebench dashboard: `streamlit run app.py`.

Routes the pages, draws the sidebar (dataset + global filters, mirrored in the URL) and
hands each page a context. Hosted read-only mode (SHAPEBENCH_HOSTED=1 or a secret) drops
the Run page and never imports torch.

The page scripts live in app_pages/, and no `pages/` folder may sit beside this file:
Streamlit (1.67) reads one as a v1 multipage app until app.py has called st.navigation once
in the process, so the first request of a fresh server went through a v1 navigation that
knows none of these pages and showed "Page not found" over the page app.py then routed to
(a top-level pages/<name>.py would even have run alone, without this sidebar).

`streamlit run app.py` finds the `st.App` below and imports this file as a module to serve
it; that App then runs this same file as its page script, where `__name__` is "__main__".
The App puts dashboard.localhost_only in front of every request, so the local dashboard
(the one with a Run page) answers only to localhost, 127.0.0.1 and [::1].
"""
from pathlib import Path

import streamlit as st

if __name__ != "__main__":
    from starlette.middleware import Middleware

    from dashboard.localhost_only import LocalhostOnly

    app = st.App(__file__, middleware=[Middleware(LocalhostOnly)])
else:
    from dashboard import sidebar

    # A file of the app, not an icon name: Streamlit fetches a :material/...: favicon from
    # fonts.gstatic.com (an emoji one from a CDN) on every load; a local image is served from here.
    FAVICON = str(Path(__file__).parent / "dashboard" / "favicon.png")
    st.set_page_config(page_title="shapebench", page_icon=FAVICON, layout="wide")

    ctx = sidebar.sidebar()
    # Streamlit serves the default page at "/" only (its url_path names it internally), so a
    # link to /overview, the name the other pages suggest, would open "Page not found".
    overview = st.Page("app_pages/overview.py", title="Overview", url_path="home", icon=":material/dashboard:", default=True)

    def to_overview() -> None:
        """/overview: on to the Overview at "/", with the filters of the link."""
        st.switch_page(overview, query_params={key: st.query_params.get_all(key) for key in st.query_params})

    pages = [
        overview,
        st.Page("app_pages/explore.py", title="Explore", url_path="explore", icon=":material/table:"),
        st.Page("app_pages/depth_width.py", title="Depth vs width", url_path="depth-width", icon=":material/stacked_line_chart:"),
        st.Page("app_pages/inversions.py", title="Inversions", url_path="inversions", icon=":material/swap_vert:"),
        st.Page("app_pages/regimes.py", title="Regimes", url_path="regimes", icon=":material/compare:"),
        st.Page("app_pages/why.py", title="Why is it slow", url_path="why", icon=":material/troubleshoot:"),
        st.Page("app_pages/reproducibility.py", title="Reproducibility", url_path="reproducibility", icon=":material/repeat:"),
        st.Page("app_pages/runs.py", title="Runs", url_path="runs", icon=":material/history:"),
        st.Page("app_pages/snapshots.py", title="Snapshots", url_path="snapshots", icon=":material/archive:"),
        st.Page(to_overview, title="Overview", url_path="overview", visibility="hidden"),
    ]
    if not ctx.hosted:
        pages.insert(1, st.Page("app_pages/run.py", title="Run", url_path="run", icon=":material/play_arrow:"))
    st.navigation(pages).run()
