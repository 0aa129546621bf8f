"""The building blocks both reports share: one self-contained page (styles, a table sorter and
every image inline, so the file can be mailed, archived or opened on an air-gapped machine),
tables, and PNG files embedded as data URIs."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 16px;
       color: #1d232b; }
h1 { font-size: 22px; margin: 0 0 4px; } h3 { font-size: 15px; margin: 14px 0 6px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d6dbe1; padding-bottom: 4px; }
.muted { color: #5b6670; } code { background: #f1f3f5; padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e6e9ed; text-align: left; }
td.num, th.num { text-align: right; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th:hover { color: #1864ab; }
.facts td:first-child { color: #5b6670; white-space: nowrap; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.swatch { display: inline-block; width: 11px; height: 11px; border: 1px solid #8888;
          margin-right: 6px; vertical-align: -1px; }
img.wide { max-width: 100%; height: auto; border: 1px solid #e6e9ed; }
figure { margin: 0 0 12px; }
.gallery figure { flex: 0 1 560px; } .gallery img { width: 100%; height: auto; }
figcaption { font-size: 13px; color: #5b6670; }
.failed { color: #c92a2a; } .ok { color: #2b8a3e; }
details summary { cursor: pointer; color: #1864ab; } pre { background: #f8f9fa; padding: 8px;
  overflow-x: auto; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #1d232b; }
"""

# Click a header to sort by it (numbers numerically, empty cells last); click again to reverse.
SORTER = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var dir = th.dataset.dir === "asc" ? -1 : 1;
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir === 1 ? "asc" : "desc";
      function key(row) {
        var text = row.cells[col].dataset.value || row.cells[col].textContent.trim();
        var n = parseFloat(text);
        return text === "" || text === "n/a" ? null : (isNaN(n) ? text.toLowerCase() : n);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: nothing is fetched from anywhere (no fonts, scripts, icons)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n<script>{SORTER}</script>\n</body></html>\n"
    )


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A metric for a table cell: n/a for a missing or NaN value."""
    if value is None or value == "":
        return "n/a"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return escape(value)
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric: Sequence[bool] | None = None,
    css_id: str | None = None,
    css_class: str = "sortable",
) -> str:
    """An HTML table; cells are escaped unless given as `Raw`; numeric columns align right.
    `css_class="sortable"` makes its headers sort the rows when clicked."""
    numeric = list(numeric or [False] * len(headers))
    classes = css_class
    head = "".join(
        f'<th class="{"num" if n else ""}">{escape(h)}</th>'
        for h, n in zip(headers, numeric, strict=True)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"num" if n else ""}">{c if isinstance(c, Raw) else escape(c)}</td>'
            for c, n in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    ident = f' id="{escape(css_id)}"' if css_id else ""
    return (
        f'<table{ident} class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


class Raw(str):
    """HTML that `table` puts into a cell as it is (already escaped by whoever made it)."""


def swatch(color: Sequence[int]) -> Raw:
    r, g, b = (int(v) for v in color[:3])
    return Raw(f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>')


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image_tag(path: Path, alt: str, css: str = "wide") -> str:
    return f'<img class="{css}" alt="{escape(alt)}" src="{png_data_uri(path)}">'
