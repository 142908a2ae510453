"""Showing text that comes from data (regimes, model names, run ids, errors) inside markdown.

Streamlit renders st.markdown, st.caption, st.info and widget labels as markdown, so a
regime holding `![x](https://...)` would make a visitor's browser fetch that URL. Every
value from a store or a snapshot goes through `md` before it is put into such a string:
markdown punctuation is backslash-escaped (CommonMark shows it as itself) and line breaks
are flattened, and control characters are shown as their escapes (vocabulary.printable),
so a value reads as the text it is and can never become an image, a link, a heading, a
colour directive or text shown in another order. Pure string code, no streamlit: testable on its own.
"""
from __future__ import annotations

import re

from vocabulary import printable

# CommonMark lets any ASCII punctuation be escaped with a backslash; these are the ones
# markdown, GFM and Streamlit's directives (:red[...], :material/icon:) give a meaning.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&\"'^])")
# A data value shown inline is never a page of text.
MAX_INLINE = 500


def md(value: object, limit: int = MAX_INLINE) -> str:
    """`value` as markdown that renders as exactly its text (shortened past `limit`)."""
    text = printable(" ".join(str(value).split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", text)
