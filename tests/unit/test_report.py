"""The daily report page from hand-made data: escaping, self-containment, the empty page."""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.reporting.daily import (
    DailyReportData,
    ModelCard,
    collect_daily_report,
    write_daily_report,
)
from pipeline.reporting.html import CSP, markdown_to_html, render_daily_report
from pipeline.stages import run_report
from pipeline.warehouse.analytics import (
    AccuracyDay,
    ConfidenceDay,
    DriftDay,
    QuarantineDay,
    ReviewItem,
    ScoredDay,
)
from pipeline.warehouse.daily_report import ScoringRunRecord
from pipeline.warehouse.database import Warehouse
from tests.hostile_corpus import MARKUP_NAME, TERMINAL_NAME
from tests.unit.test_warehouse import _clip, _prediction, _register

DAY = date(2026, 3, 31)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Strings that must arrive on the page as text, never as markup, script or a plot failure.
HOSTILE = [
    "<script>alert('label')</script>",
    '"><img src=x onerror=alert(1)>',
    "</style><h1>forged</h1>",
    "$x^$ \\frac{",  # mathtext that does not parse
    MARKUP_NAME,
    TERMINAL_NAME,
    "evil\u202ev4m.wav",
    "x'); DROP TABLE media_files; --",
    "%s %(message)s {0} %n",
    "new\nline & <b>bold</b>",
    "L" * 300,
]


def hostile_report(day: date = DAY) -> DailyReportData:
    """A month of data whose every string from the data is hostile."""
    days = [day - timedelta(days=k) for k in range(30)]
    labels = HOSTILE[:4]
    model = "v<0001>&\"'"
    card = (
        f"# Model {HOSTILE[0]}\n\n- classes: {', '.join(HOSTILE[:3])}\n"
        f"- hash: `{HOSTILE[1]}`\n\n| class | recall |\n|---|---|\n| {HOSTILE[2]} | 0.5 |\n\n"
        "![confusion matrix](confusion_matrix.png)\n![escape](../../etc/passwd.png)\n"
    )
    scored_at = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
    return DailyReportData(
        day=day,
        review_threshold=0.6,
        drift_threshold=0.2,
        scored=tuple(
            ScoredDay(d, model, label, 3 + k % 4, 0.7)
            for k, d in enumerate(days)
            for label in labels
        ),
        confidence=tuple(
            ConfidenceDay(d, model, 12, 0.6, 0.3, 0.7 - k / 100, 0.95, 2, 0.6)
            for k, d in enumerate(days)
        ),
        drift=tuple(
            DriftDay(d, model, 12, 4, k / 40, 0.2, k / 40 > 0.2) for k, d in enumerate(days)
        ),
        accuracy=tuple(
            AccuracyDay(d, model, 1 + k % 5, 1, 0.8, k % 2, k % 2) for k, d in enumerate(days)
        ),
        quarantine=tuple(
            QuarantineDay(d, HOSTILE[k % len(HOSTILE)], 1, 10) for k, d in enumerate(days)
        ),
        review_queue=tuple(
            ReviewItem(
                "ab" * 32,
                model,
                HOSTILE[0],
                0.41,
                {HOSTILE[0]: 0.41},
                scored_at,
                f"/landing/{name}",
                "audio",
                None,
                None,
            )
            for name in HOSTILE
        ),
        runs=(ScoringRunRecord(f"manual__{HOSTILE[1]}", model, 40, scored_at, scored_at, 3.5),),
        model=ModelCard(model, card, {"confusion_matrix.png": tiny_png()}),
    )


def tiny_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.5, 0.5))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


class _Page(HTMLParser):
    """Every tag, attribute and text node of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def test_every_hostile_string_is_text_on_the_page_never_markup() -> None:
    page = render_daily_report(hostile_report())
    parsed = parse(page)
    tags = [tag for tag, _ in parsed.tags]
    assert tags.count("script") == 1  # the page's own image check, nothing injected
    assert tags.count("style") == 1 and "h1" in tags and tags.count("h1") == 1
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    text = "".join(parsed.text)
    for hostile in ("<script>alert('label')</script>", '"><img src=x onerror=alert(1)>'):
        assert hostile in text  # shown, as text
    assert "</style><h1>forged</h1>" in text
    assert "new\\x0aline & <b>bold</b>" in text  # control characters shown, not acted on
    assert "evil\\u202ev4m.wav" in text  # a right-to-left override cannot reverse the name


def test_the_page_is_self_contained_images_inline_and_no_request_allowed() -> None:
    page = render_daily_report(hostile_report())
    parsed = parse(page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    # five plots and the card's confusion matrix; the card's '../../etc/passwd.png' is dropped
    assert len(images) == 6
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    [csp] = [
        a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp == CSP and "default-src 'none'" in CSP and "img-src data:" in CSP
    assert "passwd" not in "".join(a.get("src") or "" for _, a in parsed.tags)


def test_an_empty_report_is_a_valid_page_that_says_there_is_no_data_yet() -> None:
    page = render_daily_report(DailyReportData(day=DAY, review_threshold=0.6, drift_threshold=0.2))
    parsed = parse(page)
    text = " ".join(parsed.text)
    assert "No data yet." in text
    assert "No model in production yet." in text
    assert not [t for t, _ in parsed.tags if t == "img"]
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_a_report_with_only_a_model_has_no_empty_banner_but_empty_sections_say_so() -> None:
    data = DailyReportData(
        day=DAY,
        review_threshold=0.6,
        drift_threshold=0.2,
        model=ModelCard("v0001", None),
    )
    page = render_daily_report(data)
    assert 'id="no-data"' not in page
    assert "No drift data in these days yet." in page
    assert "has no MODEL_CARD.md" in page


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("# Model v1", "<h3>Model v1</h3>"),
        ("- a `<b>`", "<ul>\n<li>a <code>&lt;b&gt;</code></li>\n</ul>"),
        ("| a | b |\n|---|---|\n| 1 | <i> |", "<td>&lt;i&gt;</td>"),
        ("plain <script>", "<p>plain &lt;script&gt;</p>"),
    ],
)
def test_markdown_subset_escapes_what_it_renders(markdown: str, expected: str) -> None:
    assert expected in markdown_to_html(markdown)


def test_a_card_image_is_shown_only_when_its_file_was_read() -> None:
    assert markdown_to_html("![x](missing.png)") == ""
    shown = markdown_to_html("![x](cm.png)", {"cm.png": b"PNG"})
    assert shown == f'<img alt="x" src="data:image/png;base64,{base64.b64encode(b"PNG").decode()}">'


def test_an_empty_warehouse_gives_a_page_that_says_no_data_yet(
    settings: Settings, tmp_path: Path
) -> None:
    written = run_report(settings, date=DAY, out=str(tmp_path / "reports"))
    assert written == str(tmp_path / "reports" / "2026-03-31.html")
    page = Path(written).read_text()
    assert 'id="no-data"' in page and "No model in production yet." in page
    assert Path(tmp_path / "reports" / "latest.html").read_text() == page


def test_latest_html_is_the_newest_day_a_backfill_leaves_it_alone(tmp_path: Path) -> None:
    out = str(tmp_path / "reports")
    write_daily_report("<p>march</p>", out, date(2026, 3, 31))
    write_daily_report("<p>january</p>", out, date(2026, 1, 5))  # a backfill
    assert (tmp_path / "reports" / "latest.html").read_text() == "<p>march</p>"
    write_daily_report("<p>april</p>", out, date(2026, 4, 1))
    assert (tmp_path / "reports" / "latest.html").read_text() == "<p>april</p>"
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == ["2026-01-05.html", "2026-03-31.html", "2026-04-01.html", "latest.html"]


def _scored(warehouse: Warehouse) -> None:
    """v0001 in production; run-a scored two clips on March 30 (5 s apart), run-b one on
    March 31, and one prediction has no run id."""
    for clip_id in ("c1", "c2", "c3", "c4"):
        warehouse.add_clip(_clip(clip_id, label="a"))
    _register(warehouse, "v0001")
    warehouse.promote_model("v0001")
    day1 = datetime(2026, 3, 30, 2, 0, tzinfo=UTC)
    day2 = datetime(2026, 3, 31, 2, 0, tzinfo=UTC)
    rows = [
        _prediction("c1", "v0001", "a", 0.9, day1),
        _prediction("c2", "v0001", "b", 0.4, day1 + timedelta(seconds=5)),
        _prediction("c3", "v0001", "a", 0.8, day2),
        _prediction("c4", "v0001", "a", 0.7, day2),
    ]
    for row, run_id in zip(rows, ["run-a", "run-a", "run-b", None], strict=True):
        row["run_id"] = run_id
    warehouse.upsert_predictions(rows)


def test_recent_scoring_runs_newest_first_up_to_a_day(warehouse: Warehouse) -> None:
    _scored(warehouse)
    runs = warehouse.recent_scoring_runs(until=date(2026, 4, 1))
    assert [(r.run_id, r.clips) for r in runs] == [("run-b", 1), ("run-a", 2)]
    assert runs[1].seconds == pytest.approx(5.0)
    assert runs[1].first_scored_at == datetime(2026, 3, 30, 2, 0, tzinfo=UTC)
    assert [r.run_id for r in warehouse.recent_scoring_runs(until=date(2026, 3, 31))] == ["run-a"]
    assert [r.run_id for r in warehouse.recent_scoring_runs(until=date(2026, 4, 1), limit=1)] == [
        "run-b"
    ]


def test_collect_daily_report_reads_every_section_from_the_warehouse(
    warehouse: Warehouse, settings: Settings
) -> None:
    _scored(warehouse)
    data = collect_daily_report(warehouse, settings, date(2026, 3, 31))
    assert {(r.day, r.predicted_label, r.clips) for r in data.scored} == {
        (date(2026, 3, 30), "a", 1),
        (date(2026, 3, 30), "b", 1),
        (date(2026, 3, 31), "a", 2),
    }
    assert [r.day for r in data.confidence] == [date(2026, 3, 30), date(2026, 3, 31)]
    assert [r.clip_id for r in data.review_queue] == ["c2"]  # 0.4 < 0.6
    assert [r.run_id for r in data.runs] == ["run-b", "run-a"]
    assert data.model is not None and data.model.markdown is None  # no version folder here
    assert not data.is_empty
    # A day before anything was scored: an empty window, but the model is still there.
    earlier = collect_daily_report(warehouse, settings, date(2026, 3, 1))
    assert earlier.scored == () and earlier.runs == () and earlier.model is not None
    page = render_daily_report(data)
    assert "run-b" in page and "c2" in page and 'id="no-data"' not in page
