"""Text that comes from data (regimes, model names, run ids, messages) is shown as text: in
markdown on the pages (dashboard.text.md) and in the HTML report, never as an image, a link
or markup that makes a visitor's browser fetch anything."""
from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from analysis.html_report import build_report
from analysis.synthetic import SyntheticPlan, build_store
from dashboard.text import md

HOSTILE = [
    "NVIDIA H100 ![x](https://evil.example/p.png)",
    "[click](https://evil.example) <img src=https://evil.example/i.png>",
    "# heading\n\n---\n* item `code` **bold** _it_ ~~s~~ | a | b |",
    ":red[coloured] :material/home: $x^2$ \\![y](https://evil.example/q.png)",
    "<script>alert(1)</script> &lt; &amp;",
]
# CommonMark, as Streamlit's renderer, plus GFM tables and strikethrough.
RENDER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@pytest.mark.parametrize("text", HOSTILE)
def test_md_renders_as_exactly_its_text(text):
    rendered = RENDER.render(f"Regime **{md(text)}** here")
    assert "<img" not in rendered and "<a " not in rendered and "<h1" not in rendered and "<script" not in rendered
    inner = re.fullmatch(r"<p>Regime <strong>(.*)</strong> here</p>\n", rendered, re.S).group(1)
    import html
    assert html.unescape(inner) == " ".join(text.split())


def test_md_shortens_a_huge_value():
    assert md("x" * 10_000) == "x" * 499 + "…"
    assert md("a\nb\r\nc") == "a b c"


def test_the_html_report_escapes_data_and_embeds_no_outside_image():
    evil = "H100 </script><script>alert(1)</script> <img src=https://evil.example/i.png>"
    con = build_store(SyntheticPlan(regimes=(evil, "other"), phases=("decode",), reps=2, gen_len=2,
                                    shapes=tuple((d, w) for d in (1, 2, 4) for w in (64, 128, 256))))
    con.execute("UPDATE cells SET model_name = model_name || '<img src=https://evil.example/m.png>'")
    page = build_report(con, title=f"shapebench: {evil}")
    assert "<script>alert(1)" not in page
    assert not re.search(r"<img[^>]*evil\.example", page)
    assert "&lt;img src=https://evil.example/i.png&gt;" in page  # shown, as text
