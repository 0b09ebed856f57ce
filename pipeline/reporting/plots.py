"""The daily report's plots as PNG bytes (matplotlib, Agg backend, imported when called).

Text from the data (labels, reasons, model versions) is drawn with mathtext off, so a label
such as ``$x^$`` is shown as written instead of failing to parse, and long names are cut.
Every function takes the days to show (``first``..``last`` inclusive) so that plots line up.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from typing import Any

from pipeline.warehouse.analytics import (
    AccuracyDay,
    ConfidenceDay,
    DriftDay,
    QuarantineDay,
    ScoredDay,
)

#: Most series a stacked plot shows; the rest are summed as "other".
MAX_SERIES = 8
_NAME_CHARS = 32
_SIZE = (9.0, 3.2)  # inches; at 100 dpi a 900 x 320 px image
_DPI = 100


@contextmanager
def _figure() -> Iterator[tuple[Any, Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False, "font.size": 9}):
        fig, ax = plt.subplots(figsize=_SIZE)
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def short(name: str, limit: int = _NAME_CHARS) -> str:
    """``name`` cut to ``limit`` characters, control characters shown as '?' (a legend is one
    line per entry)."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def _date_axis(ax: Any, first: date, last: date) -> None:
    import matplotlib.dates as mdates

    # Datetimes, not dates: a date minus 18 hours is the same date, which would cut the first
    # and last day's bars and points in half.
    start, end = datetime.combine(first, time()), datetime.combine(last, time())
    ax.set_xlim(start - timedelta(hours=18), end + timedelta(hours=18))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.grid(alpha=0.3)


def _stacked(
    ax: Any, counts: dict[str, dict[date, int]], days: Sequence[date], legend_title: str
) -> None:
    """Bars per day stacked by series, the ``MAX_SERIES`` largest first, the rest as other."""
    ranked = sorted(counts, key=lambda s: (-sum(counts[s].values()), s))
    shown, rest = ranked[:MAX_SERIES], ranked[MAX_SERIES:]
    series = [(short(s), counts[s]) for s in shown]
    if rest:
        other: dict[date, int] = defaultdict(int)
        for name in rest:
            for day, n in counts[name].items():
                other[day] += n
        series.append((f"other ({len(rest)})", other))
    bottom = [0] * len(days)
    for name, per_day in series:
        heights = [per_day.get(d, 0) for d in days]
        ax.bar(days, heights, bottom=bottom, label=name, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if series:
        _legend(ax, legend_title)


def scored_per_day(rows: Iterable[ScoredDay], first: date, last: date) -> bytes:
    """Clips scored per day (by any model version), stacked by predicted label."""
    counts: dict[str, dict[date, int]] = defaultdict(dict)
    for row in rows:
        per_day = counts[row.predicted_label]
        per_day[row.day] = per_day.get(row.day, 0) + row.clips
    with _figure() as (fig, ax):
        _stacked(ax, counts, _days(first, last), "predicted label")
        _date_axis(ax, first, last)
        ax.set_ylabel("clips scored")
        ax.set_title("Clips scored per day, by predicted label")
        return _png(fig)


def _by_model(rows: Iterable[Any]) -> dict[str, list[Any]]:
    """Rows per model version, each list by day; at most ``MAX_SERIES`` versions (the ones
    with the latest days)."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.model_version].append(row)
    latest = sorted(grouped, key=lambda v: (max(r.day for r in grouped[v]), v))[-MAX_SERIES:]
    return {v: sorted(grouped[v], key=lambda r: r.day) for v in sorted(latest)}


def _legend(ax: Any, title: str) -> None:
    ax.legend(title=title, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def confidence_per_day(
    rows: Iterable[ConfidenceDay], first: date, last: date, threshold: float
) -> bytes:
    """Median confidence per day and model version with its 10-90 % band, and the review
    threshold as a dashed line."""
    with _figure() as (fig, ax):
        for version, series in _by_model(rows).items():
            days = [r.day for r in series]
            line = ax.plot(days, [r.p50 for r in series], marker="o", ms=3, label=short(version))
            ax.fill_between(
                days,
                [r.p10 for r in series],
                [r.p90 for r in series],
                alpha=0.2,
                color=line[0].get_color(),
            )
        ax.axhline(threshold, color="crimson", ls="--", lw=1, label=f"review below {threshold:g}")
        _date_axis(ax, first, last)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("confidence (median, 10-90 %)")
        ax.set_title("Confidence per day")
        _legend(ax, "model")
        return _png(fig)


def drift_per_day(rows: Sequence[DriftDay], first: date, last: date, threshold: float) -> bytes:
    """PSI of the predicted-label distribution per day and model version, with the days over
    the threshold circled and the threshold as a dashed line."""
    with _figure() as (fig, ax):
        for version, series in _by_model(rows).items():
            days = [r.day for r in series]
            ax.plot(days, [r.psi for r in series], marker="o", ms=3, label=short(version))
            drifted = [r for r in series if r.drifted]
            ax.scatter(
                [r.day for r in drifted],
                [r.psi for r in drifted],
                s=60,
                facecolors="none",
                edgecolors="crimson",
                zorder=3,
            )
        ax.axhline(threshold, color="crimson", ls="--", lw=1, label=f"drift above {threshold:g}")
        _date_axis(ax, first, last)
        ax.set_ylim(-0.02 * threshold, max([1.5 * threshold, *(1.1 * r.psi for r in rows)]))
        ax.set_ylabel("PSI vs training labels")
        ax.set_title("Prediction drift per day")
        _legend(ax, "model")
        return _png(fig)


def accuracy_per_day(rows: Iterable[AccuracyDay], first: date, last: date) -> bytes:
    """Accuracy per day and model version on labelled clips it never trained on (solid; marker
    area grows with the clips) and on the reviewed ones among them (dashed, squares)."""
    with _figure() as (fig, ax):
        for version, series in _by_model(r for r in rows if r.labelled_clips > 0).items():
            days = [r.day for r in series]
            line = ax.plot(days, [r.accuracy for r in series], lw=1, label=short(version))
            colour = line[0].get_color()
            ax.scatter(
                days,
                [r.accuracy for r in series],
                s=[8 + 4 * min(r.labelled_clips, 50) for r in series],
                color=colour,
                alpha=0.7,
            )
            reviewed = [r for r in series if r.reviewed_clips > 0]
            if reviewed:
                ax.plot(
                    [r.day for r in reviewed],
                    [r.reviewed_correct / r.reviewed_clips for r in reviewed],
                    ls="--",
                    marker="s",
                    ms=4,
                    color=colour,
                    label=f"{short(version)} (reviewed)",
                )
        _date_axis(ax, first, last)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title("Accuracy per day on labelled and reviewed clips")
        _legend(ax, "model")
        return _png(fig)


def quarantine_per_day(rows: Iterable[QuarantineDay], first: date, last: date) -> bytes:
    """Files quarantined per day, stacked by reason."""
    counts: dict[str, dict[date, int]] = defaultdict(dict)
    for row in rows:
        counts[row.reason][row.day] = counts[row.reason].get(row.day, 0) + row.files
    with _figure() as (fig, ax):
        _stacked(ax, counts, _days(first, last), "reason")
        _date_axis(ax, first, last)
        ax.set_ylabel("files quarantined")
        ax.set_title("Quarantined files per day, by reason")
        return _png(fig)
