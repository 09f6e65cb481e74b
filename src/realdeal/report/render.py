"""Rendering the report's blocks: self-contained HTML (inline CSS, no scripts) and Markdown.

Figures are referenced by the same relative PNG paths in both.
"""

from __future__ import annotations

import html

from realdeal import __version__
from realdeal.report.document import Block, Code, Figure, Note, Para, Table

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
 background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{font-size:1.6em;margin:.2em 0 .3em}h2{font-size:1.25em;margin-top:2em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}
nav ol{columns:2;padding-left:1.4em}a{color:#0b5cad}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
.note{background:#fff8e1;border-left:4px solid #ffb000;padding:.35em .7em;margin:.6em 0}
table{border-collapse:collapse;margin:.4em 0 .2em;font-size:.85em;
 font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5d5d5;padding:.2em .45em;text-align:right;white-space:nowrap}
th{background:#f3f5f7}td:first-child,td:nth-child(2),th:first-child{text-align:left}
.tbl{overflow-x:auto;margin-bottom:1em}.tbl h3{font-size:1em;margin:.9em 0 .2em}
.fn{font-size:.82em;color:#555;margin:.1em 0}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;font-size:.82em}
footer{margin-top:3em;font-size:.85em;color:#666}
"""


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def render_html(
    title: str, intro: list[Block], sections: list[tuple[str, str, list[Block]]]
) -> str:
    """Self-contained HTML (inline CSS, no scripts) of the report's blocks."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>",
        f"<body><main><h1>{_e(title)}</h1>",
    ]
    out += [_html_block(b) for b in intro]
    out.append("<nav><ol>")
    out += [f'<li><a href="#{_e(a)}">{_e(t)}</a></li>' for a, t, _ in sections]
    out.append("</ol></nav>")
    for anchor, heading, blocks in sections:
        out.append(f'<section id="{_e(anchor)}"><h2>{_e(heading)}</h2>')
        out += [_html_block(b) for b in blocks]
        out.append("</section>")
    out.append(f"<footer>Built by realdeal {_e(__version__)}.</footer></main></body></html>")
    return "\n".join(out) + "\n"


def _html_block(b: Block) -> str:
    if isinstance(b, Para):
        return f"<p>{_e(b.text)}</p>"
    if isinstance(b, Note):
        return f'<p class="note">{_e(b.text)}</p>'
    if isinstance(b, Figure):
        return (
            f'<figure><img src="{_e(b.src)}" alt="{_e(b.alt)}">'
            f"<figcaption>{_e(b.caption)}</figcaption></figure>"
        )
    if isinstance(b, Table):
        head = "".join(f"<th>{_e(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        notes = "".join(f'<p class="fn">{_e(n)}</p>' for n in b.footnotes)
        return (
            f'<div class="tbl"><h3>{_e(b.title)}</h3><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{notes}</div>"
        )
    if isinstance(b, Code):
        return f"<details><summary>{_e(b.summary)}</summary><pre>{_e(b.text)}</pre></details>"
    raise TypeError(f"unknown block {b!r}")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(
    title: str, intro: list[Block], sections: list[tuple[str, str, list[Block]]]
) -> str:
    """Markdown of the report's blocks (figures by the same relative PNG paths)."""
    out = [f"# {title}", ""]
    for b in intro:
        out += [_md_block(b), ""]
    for _, heading, blocks in sections:
        out += [f"## {heading}", ""]
        for b in blocks:
            out += [_md_block(b), ""]
    out.append(f"*Built by realdeal {__version__}.*")
    return "\n".join(out) + "\n"


def _md_block(b: Block) -> str:
    if isinstance(b, Para):
        return b.text
    if isinstance(b, Note):
        return f"> **Note:** {b.text}"
    if isinstance(b, Figure):
        return f"![{_md_cell(b.alt)}]({b.src})\n\n*{b.caption}*"
    if isinstance(b, Table):
        lines = [f"**{b.title}**", ""]
        lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
        lines.append("|" + "---|" * len(b.header))
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
        if b.footnotes:
            lines.append("")
            lines += [f"{n}  " for n in b.footnotes]
        return "\n".join(lines)
    if isinstance(b, Code):
        return f"<details><summary>{b.summary}</summary>\n\n```json\n{b.text}\n```\n\n</details>"
    raise TypeError(f"unknown block {b!r}")
