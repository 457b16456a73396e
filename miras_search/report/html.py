"""A self-contained HTML page: tables as HTML, figures as embedded base64 PNGs."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
tr.named { background: #fce4ec; font-weight: bold; } tr.baseline { background: #e1f5fe; }
tr.infeasible { color: #888; font-style: italic; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 13px; } .verdict { font-size: 15px; font-weight: bold; }
"""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] | None = None,
          table_id: str | None = None, text_columns: int = 0) -> str:
    """An HTML table; the first ``text_columns`` columns are left-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        cls = f' class="{escape(row_classes[index])}"' if row_classes and row_classes[index] else ""
        cells = "".join(
            f'<td class="text">{escape(c)}</td>' if i < text_columns else f"<td>{escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(path: Path, alt: str) -> str:
    """``path`` (a PNG) inlined as a data URI, so the page needs no other file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}" data-file="{escape(path.name)}">'


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def paragraph(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{escape(text)}</p>'


def page(title: str, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )
