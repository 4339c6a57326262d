"""The pieces of the project's HTML pages: style sheet, escaping, number formats, tables.

Shared by the run's report (:mod:`deepyeast.report.make_report`), the report of a classified
screen (:mod:`deepyeast.analysis.screen_report`) and of a comparison
(:mod:`deepyeast.report.compare_html`), so the pages look alike.
"""

import html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #bbb;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{background:#fff3cd;border:1px solid #e0b84c;padding:.6em 1em;margin:1em 0}
.note{background:#f3f6fa;border-left:3px solid #8aa4c8;padding:.4em .8em}
.ok{color:#1a7f37}.bad{color:#b42318}.notrun{color:#8a6100}.caption{font-size:.9em;color:#444;margin-top:-.3em}
figure{margin:1.2em 0}figure img{max-width:min(100%,860px);border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
.wide{overflow-x:auto}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
details{margin:.8em 0}summary{cursor:pointer;color:#335}
"""


def escape(x):
    """Text -> HTML-escaped text (quotes too)."""
    return html.escape(str(x), quote=True)


def fmt_value(v):
    """A value as table text: None -> an em dash, bools yes/no, floats to 4 significant digits."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_count(entry, unit=""):
    """``0.822 (822/1,000 cells) [0.802, 0.842]`` for a count, the number itself for a plain value."""
    if entry is None:
        return '<span class="bad">missing</span>'
    if not isinstance(entry, dict):
        return escape(fmt_value(entry))
    v = entry.get("value")
    text = "—" if v is None else f"{v:.3f}"
    unit = f" {unit}" if unit else ""
    if entry.get("correct") is not None and entry.get("total") is not None:
        text += f" ({int(entry['correct']):,}/{int(entry['total']):,}{unit})"
    elif entry.get("total") is not None:
        text += f" (n = {int(entry['total']):,}{unit})"
    if entry.get("lo") is not None and entry.get("hi") is not None:
        text += f" [{entry['lo']:.3f}, {entry['hi']:.3f}]"
    return escape(text)


class Raw(str):
    """Already-escaped HTML for a table cell."""


def html_table(header, rows):
    """An HTML table (in a horizontally scrolling div): numbers right-aligned, :class:`Raw` cells as given."""
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for v in r:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f"<td{' class=num' if num else ''}>{v if isinstance(v, Raw) else escape(fmt_value(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return '<div class="wide">' + "\n".join(out) + "</div>"
