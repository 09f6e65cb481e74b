"""The report as a document: a list of blocks (headings aside) that :mod:`.render` writes out.

The same blocks become self-contained HTML and Markdown, so the two never disagree.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Para:
    text: str


@dataclasses.dataclass
class Note:
    """A one-line note: a skipped section or missing input."""

    text: str


@dataclasses.dataclass
class Figure:
    src: str
    alt: str
    caption: str


@dataclasses.dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    footnotes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Code:
    """A collapsible block of JSON (HTML ``<details>``, Markdown fenced code)."""

    summary: str
    text: str


Block = Para | Note | Figure | Table | Code
