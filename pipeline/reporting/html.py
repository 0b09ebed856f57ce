"""The daily report as one self-contained HTML page: plots embedded as base64 PNG, styles
inline, no request leaves the page.

Every string from the data (clip names, labels, reasons, the model card) is escaped with
:func:`html.escape`. The page's Content-Security-Policy allows only inline styles, ``data:``
images and the page's one script (by its hash): were something to slip through unescaped, the
browser would still refuse to load or run it. The script checks that every image decoded and
logs a console error naming any that did not.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import date
from html import escape

from pipeline.reporting import plots
from pipeline.reporting.daily import DailyReportData, ModelCard
from pipeline.text import terminal_safe
from pipeline.warehouse.daily_report import ScoringRunRecord

#: Bidirectional controls: U+202E in a file name shows "evil\u202ev4m.wav" as "evilvaw.m4v".
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_SCRIPT = (
    'window.addEventListener("load",function(){'
    "var bad=0;for(var i=0;i<document.images.length;i++){var img=document.images[i];"
    "if(!img.complete||img.naturalWidth===0){bad++;"
    'console.error("image did not decode: "+img.alt);}}'
    'document.body.setAttribute("data-images-checked",String(document.images.length-bad));});'
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px;
       color: #1d232a; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem;
     margin-top: 2rem; }
.meta, .note { color: #57606a; font-size: 0.9rem; }
.empty { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.8rem 1rem; }
img { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left;
         max-width: 40rem; overflow-wrap: anywhere; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.card { border: 1px solid #d0d7de; padding: 0.5rem 1rem; background: #fafbfc; }
code { background: #eff1f3; padding: 0 0.2rem; }
"""


def render_daily_report(data: DailyReportData) -> str:
    """The whole page for ``data``, as HTML text."""
    title = f"stpipe daily report {data.day.isoformat()}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">The {data.days} days from {data.first_day.isoformat()} to '
        f"{data.day.isoformat()} (UTC). Review threshold {data.review_threshold:g}, "
        f"drift threshold (PSI) {data.drift_threshold:g}.</p>",
    ]
    if data.is_empty:
        parts.append(
            '<p class="empty" id="no-data"><strong>No data yet.</strong> Nothing has been '
            "scored, quarantined or trained in this warehouse. Ingest media, extract features, "
            "train a model and score (<code>stpipe demo</code> does all four), then run "
            "<code>stpipe report</code> again.</p>"
        )
    parts += _sections(data)
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _sections(data: DailyReportData) -> list[str]:
    first, last = data.first_day, data.day
    return [
        _plot_section(
            "Clips scored and predicted labels",
            "scored",
            data.scored,
            lambda: plots.scored_per_day(data.scored, first, last),
            "Clips scored per day (by any model version), stacked by predicted label.",
        ),
        _plot_section(
            "Confidence",
            "confidence",
            data.confidence,
            lambda: plots.confidence_per_day(data.confidence, first, last, data.review_threshold),
            f"Predictions below {data.review_threshold:g} go to the review queue.",
        )
        + _review_table(data),
        _plot_section(
            "Drift",
            "drift",
            data.drift,
            lambda: plots.drift_per_day(data.drift, first, last, data.drift_threshold),
            "Population stability index of each day's predicted labels against the labels the "
            f"model was trained on; circled days are above {data.drift_threshold:g}.",
        ),
        _plot_section(
            "Accuracy over time",
            "accuracy",
            data.accuracy,
            lambda: plots.accuracy_per_day(data.accuracy, first, last),
            "On clips with a label (from ingest or a reviewer) that the model did not train "
            "on; larger points stand for more clips.",
        ),
        _plot_section(
            "Quarantine",
            "quarantine",
            data.quarantine,
            lambda: plots.quarantine_per_day(data.quarantine, first, last),
            "Files that could not be used, by reason.",
        )
        + _quarantine_table(data),
        _model_section(data.model),
        _runs_section(data.runs),
    ]


def _plot_section(
    heading: str, key: str, rows: tuple[object, ...], draw: Callable[[], bytes], note: str
) -> str:
    head = f'<section id="{key}"><h2>{escape(heading)}</h2>'
    if not rows:
        return head + f'<p class="note">No {escape(key)} data in these days yet.</p></section>'
    png = base64.b64encode(draw()).decode("ascii")
    return (
        head
        + f'<img alt="{escape(heading)}" src="data:image/png;base64,{png}">'
        + f'<p class="note">{escape(note)}</p></section>'
    )


def text(value: object) -> str:
    """A string from the data as HTML text: escaped, with control characters and
    bidirectional overrides shown as ``\\xNN`` / ``\\uNNNN`` instead of acting."""
    shown = _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", terminal_safe(str(value)))
    return escape(shown)


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{'-' if value is None else text(value)}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    return f"<td>{text(value)}</td>"


def _review_table(data: DailyReportData) -> str:
    if not data.review_queue:
        return '<p class="note">The review queue is empty.</p>'
    rows = [
        (r.clip_id, r.uri, r.predicted_label, r.confidence, f"{r.scored_at:%Y-%m-%d %H:%M}")
        for r in data.review_queue
    ]
    return (
        f'<h3>Review queue (newest {len(rows)})</h3><div id="review-queue">'
        + _table(("clip", "file", "predicted", "confidence", "scored at (UTC)"), rows)
        + '</div><p class="note">Correct a label with <code>stpipe label CLIP_ID LABEL</code>.'
        "</p>"
    )


def _quarantine_table(data: DailyReportData) -> str:
    totals: dict[str, int] = {}
    for row in data.quarantine:
        totals[row.reason] = totals.get(row.reason, 0) + row.files
    if not totals:
        return ""
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return _table(("reason", "files"), ranked)


def _model_section(card: ModelCard | None) -> str:
    head = '<section id="model"><h2>Production model</h2>'
    if card is None:
        return head + '<p class="note">No model in production yet.</p></section>'
    if card.markdown is None:
        return (
            head + f"<p>Version <code>{text(card.model_version)}</code>: its folder has no "
            "MODEL_CARD.md.</p></section>"
        )
    return (
        head + f'<div class="card">{markdown_to_html(card.markdown, card.images)}</div></section>'
    )


def _runs_section(runs: tuple[ScoringRunRecord, ...]) -> str:
    head = '<section id="runs"><h2>Last scoring runs</h2>'
    if not runs:
        return head + '<p class="note">No scoring run has written predictions yet.</p></section>'
    rows = [
        (
            r.run_id,
            r.model_version,
            r.clips,
            f"{r.first_scored_at:%Y-%m-%d %H:%M:%S}",
            f"{r.last_scored_at:%Y-%m-%d %H:%M:%S}",
            r.seconds,
        )
        for r in runs
    ]
    return (
        head
        + _table(("run", "model", "clips", "first scored (UTC)", "last scored", "seconds"), rows)
        + '<p class="note">Per-stage timings are not recorded in the warehouse; these are the '
        "times the predictions of each run were written (seconds: first to last).</p></section>"
    )


_IMAGE_LINE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
_CODE = re.compile(r"`([^`]*)`")


def markdown_to_html(markdown: str, images: dict[str, bytes] | None = None) -> str:
    """A small subset of Markdown (headings, bullet lists, pipe tables, inline code, image
    lines) as HTML. All text is escaped first; an image line shows only a file of ``images``
    (PNG bytes by the name the card links to), embedded."""
    images = images or {}
    out: list[str] = []
    in_list = False
    table: list[list[str]] = []

    def flush() -> None:
        nonlocal in_list
        if in_list:
            out.append("</ul>")
            in_list = False
        if table:
            rows = [r for r in table if not all(set(c.strip()) <= set("-:") for c in r)]
            out.append(_markdown_table(rows))
            table.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("|") and line.endswith("|") and len(line) > 1:
            if in_list:
                flush()
            table.append([c.strip() for c in line[1:-1].split("|")])
            continue
        if table:
            flush()
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
            continue
        flush()
        heading = re.match(r"^(#{1,4})\s+(.*)$", line)
        image = _IMAGE_LINE.match(line)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)  # the card sits under the page's h2
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            data = images.get(image.group(2))
            if data is not None:
                encoded = base64.b64encode(data).decode("ascii")
                out.append(
                    f'<img alt="{escape(image.group(1))}" src="data:image/png;base64,{encoded}">'
                )
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def _markdown_table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(markdown: str) -> str:
    """Escaped ``text`` with `code` spans."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", text(markdown))


def report_file_name(day: date) -> str:
    return f"{day.isoformat()}.html"
