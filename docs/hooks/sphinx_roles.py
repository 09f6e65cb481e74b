"""MkDocs hook: show the Sphinx roles of realdeal's docstrings as plain code.

realdeal's docstrings cross-reference with Sphinx roles (``:class:`Volume```,
``:func:`~realdeal.data.io.load_volume```). mkdocstrings renders docstrings as Markdown, where
such a role would print as ``:class:`` followed by the code. This hook turns every role into
its code span (a leading ``~`` keeps the last dotted part, as Sphinx shows it) and a reST
literal-block marker ``::`` at the end of a paragraph into ``:``.
"""

from __future__ import annotations

import re

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|type):<code>(~?)([^<]*)</code>"
)
_LITERAL_MARKER = re.compile(r"::(</p>)")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    return f"<code>{shown}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    html = _ROLE.sub(_code, html)
    return _LITERAL_MARKER.sub(r":\1", html)
