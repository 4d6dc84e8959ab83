"""How the reports write a table: CSV, Markdown and a self-contained HTML page with the
figures inlined, and a plain-text table for the terminal. Shared by the sweep report
(report.py) and the study report (study_report.py)."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path


def write_outputs(
    out_dir: Path, columns, rows, figures, title: str, stem: str = "report", preamble: str = "", links=()
) -> None:
    """<stem>.csv, <stem>.md and a self-contained <stem>.html (figures inlined); `links`:
    (text, relative href) of pages beside it."""
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    md = [f"# {title}", ""] + ([f"```\n{preamble}\n```", ""] if preamble else [])
    md += [f"[{text}]({href})" for text, href in links] + ([""] if links else [])
    md += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    md += [""] + [f"![{p.stem}]({p.name})" for p in figures]
    (out_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    images = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in figures
    )
    pre = f"<pre>{html.escape(preamble)}</pre>" if preamble else ""
    pre += "".join(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>' for text, href in links)
    (out_dir / f"{stem}.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "tr:nth-child(even){background:#f6f6f6}img{max-width:100%}"
        # a long label wraps in its cell, and a wide table scrolls inside its box, not the page
        ".table{overflow-x:auto;max-width:100%}td:first-child{max-width:28em;overflow-wrap:anywhere}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{pre}<div class='table'><table><tr>{cells}</tr>{body}</table></div>"
        f"{images}</body></html>\n"
    )


def print_table(columns, rows) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
