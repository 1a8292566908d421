"""Assembling the report page: one self-contained HTML file.

Images are embedded as base64 PNG ``data:`` URIs; the page has no JavaScript and
loads nothing from the network (the only links are in-page anchors and the
figures' PDF copies next to it). Every piece of text that comes from the data
(config, names, notes) goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def esc(text: object) -> str:
    """HTML-escaped ``str(text)`` (quotes included, safe in attributes)."""
    return html.escape(str(text), quote=True)


@dataclass
class FigureOut:
    """A rendered figure: its file stem under figures/, caption and PNG bytes."""

    name: str
    caption: str
    png: bytes
    width_px: int
    height_px: int


@dataclass
class Cell:
    text: str
    rowspan: int = 1
    cls: str = ""
    title: str = ""


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell | str]]
    caption: str = ""
    row_attrs: Sequence[Mapping[str, str]] = ()
    cls: str = ""


@dataclass
class SectionOut:
    """One section of the page; ``id`` is the HTML id (one per measured quantity)."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_html: list[str] = field(default_factory=list)  # already escaped / built here
    footnotes: list[str] = field(default_factory=list)  # plain text, shown after the tables


CSS = """
:root { --fg: #1d1d1f; --muted: #5b5f66; --line: #d9dce1; --bg2: #f5f6f8; --warn: #fff6dc; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
       sans-serif; color: var(--fg); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 0 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
p { margin: 6px 0; max-width: 1000px; }
.meta { color: var(--muted); }
nav ol { columns: 3; margin: 8px 0; padding-left: 22px; }
nav a { color: #1b5fa8; text-decoration: none; }
section { margin-top: 30px; }
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 14px; margin-top: 4px; max-width: 1100px; }
figcaption a { color: var(--muted); }
table { border-collapse: collapse; margin: 10px 0; font-size: 14px;
        font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 13px;
          padding-top: 6px; }
.after p { color: var(--muted); font-size: 14px; margin: 3px 0; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: right; }
td { white-space: nowrap; }
td[rowspan] { white-space: normal; max-width: 18em; }
table.paper td { white-space: normal; text-align: left; max-width: 26em; }
th { background: var(--bg2); text-align: center; }
td.label { text-align: left; font-weight: 600; background: var(--bg2); }
td.bad { background: #fde3e3; }
td.good { background: #e4f4e8; }
.notes { background: var(--warn); border-left: 4px solid #e0a800; padding: 6px 12px;
         margin: 10px 0; font-size: 14px; }
.notes ul { margin: 4px 0; padding-left: 20px; }
pre { background: var(--bg2); padding: 12px; overflow-x: auto; font-size: 13px;
      border: 1px solid var(--line); }
"""


def _cell(c: Cell | str, tag: str = "td") -> str:
    c = c if isinstance(c, Cell) else Cell(str(c))
    attrs = ""
    if c.rowspan > 1:
        attrs += f' rowspan="{int(c.rowspan)}"'
    if c.cls:
        attrs += f' class="{esc(c.cls)}"'
    if c.title:
        attrs += f' title="{esc(c.title)}"'
    return f"<{tag}{attrs}>{esc(c.text)}</{tag}>"


def render_table(t: Table) -> str:
    head = "".join(_cell(h, "th") for h in t.headers)
    rows = []
    for i, row in enumerate(t.rows):
        attrs = t.row_attrs[i] if i < len(t.row_attrs) else {}
        a = "".join(f' {esc(k)}="{esc(v)}"' for k, v in attrs.items())
        rows.append(f"<tr{a}>" + "".join(_cell(c) for c in row) + "</tr>")
    cls = f' class="{esc(t.cls)}"' if t.cls else ""
    cap = f"<caption>{esc(t.caption)}</caption>" if t.caption else ""
    return (f"<table{cls}>{cap}<thead><tr>{head}</tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table>")


def render_figure(f: FigureOut) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure id="fig-{esc(f.name)}" data-figure="{esc(f.name)}">'
        f'<img src="data:image/png;base64,{data}" alt="{esc(f.caption)}" '
        f'width="{int(f.width_px)}" height="{int(f.height_px)}">'
        f"<figcaption>{esc(f.caption)} "
        f'<a href="figures/{esc(f.name)}.pdf">[PDF]</a></figcaption></figure>'
    )


def render_notes(notes: Sequence[str], title: str = "Caveats from the analysis") -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f'<div class="notes"><strong>{esc(title)}</strong><ul>{items}</ul></div>'


def render_section(s: SectionOut) -> str:
    parts = [f'<section id="{esc(s.id)}">', f"<h2>{esc(s.title)}</h2>"]
    parts += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
    parts.append(render_notes(s.notes))
    parts += [render_table(t) for t in s.tables]
    if s.footnotes:
        parts.append('<div class="after">' + "".join(f"<p>{esc(p)}</p>" for p in s.footnotes)
                     + "</div>")
    parts += [render_figure(f) for f in s.figures]
    parts += list(s.extra_html)
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def render_page(*, title: str, meta: Sequence[str], sections: Sequence[SectionOut],
                skipped: Mapping[str, str], top_notes: Sequence[str] = ()) -> str:
    """The whole page: header, table of contents, what was not measured, sections."""
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    skip = ""
    if skipped:
        items = "".join(f"<li><strong>{esc(k)}</strong>: {esc(v)}</li>"
                        for k, v in skipped.items())
        skip = f'<div class="notes"><strong>Not shown</strong><ul>{items}</ul></div>'
    head = [
        "<header>",
        f"<h1>{esc(title)}</h1>",
        *(f'<p class="meta">{esc(m)}</p>' for m in meta),
        render_notes(top_notes, "Sweep status"),
        f"<nav><ol>{toc}</ol></nav>",
        skip,
        "</header>",
    ]
    body = "\n".join([*head, *(render_section(s) for s in sections)])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )
