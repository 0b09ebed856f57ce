"""Reviewers' labels: `stpipe label` and its stages on SQLite and PostgreSQL, refusals that write
nothing, and feedback that changes the next model."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.features.store import FeatureStore
from pipeline.stages import run_feedback_check, run_label, run_label_csv, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.feature_factory import temporal_corpus
from tests.processes import stpipe
from tests.unit.test_warehouse import _clip

CLIP_A = "a" * 8 + "1" * 56
CLIP_B = "a" * 8 + "2" * 56
CLIP_C = "c" * 64


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def labelled_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Settings:
    """Settings of a warehouse (SQLite or PostgreSQL) holding three clips, one labelled."""
    if request.param == "sqlite":
        settings = make_settings()
    else:
        settings = make_settings(warehouse_url=request.getfixturevalue("postgres_url"))
    with Warehouse.connect(settings.warehouse) as warehouse:
        warehouse.add_clip(_clip(CLIP_A, label="cat"))
        warehouse.add_clip(_clip(CLIP_B))
        warehouse.add_clip(_clip(CLIP_C))
    return settings


def _feedback(settings: Settings) -> list[tuple[str, str, str | None, str]]:
    with Warehouse.connect(settings.warehouse) as warehouse:
        return [(f.clip_id, f.label, f.previous_label, f.reviewer) for f in warehouse.feedback()]


def test_a_label_is_recorded_with_its_previous_label_and_a_prefix_finds_the_clip(
    labelled_settings: Settings,
) -> None:
    record = run_label(labelled_settings, CLIP_A, "dog", reviewer="ana", note="barks")
    assert (record.clip_id, record.label, record.previous_label, record.note) == (
        CLIP_A,
        "dog",
        "cat",
        "barks",
    )
    assert run_label(labelled_settings, "CCCCCCCC", "cat", reviewer="bo").clip_id == CLIP_C
    assert _feedback(labelled_settings) == [
        (CLIP_A, "dog", "cat", "ana"),
        (CLIP_C, "cat", None, "bo"),
    ]
    with Warehouse.connect(labelled_settings.warehouse) as warehouse:
        assert warehouse.feedback_count_since(None) == 2
        assert warehouse.feedback_count_since(record.created_at - timedelta(seconds=1)) == 2
        assert warehouse.feedback_count_since(datetime.now(UTC) + timedelta(hours=1)) == 0


@pytest.mark.parametrize(
    ("clip_id", "label", "message"),
    [
        ("f" * 64, "dog", "no clip 'ffff"),
        ("aaaa", "dog", "at least 8 characters"),
        ("aaaaaaaa", "dog", "more than one clip"),
        (CLIP_A, "two words", "not a valid label"),
        (CLIP_A, "x" * 65, "not a valid label"),
    ],
)
def test_unknown_clips_and_invalid_labels_are_refused_and_nothing_is_written(
    labelled_settings: Settings, clip_id: str, label: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_label(labelled_settings, clip_id, label, reviewer="ana")
    assert _feedback(labelled_settings) == []


def test_a_csv_is_recorded_whole_or_not_at_all(labelled_settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"clip_id,label,note\n{CLIP_A},dog,\n{CLIP_B},bird,ok\n{'0' * 64},cat,\n")
    with pytest.raises(ConfigError, match=r"bad\.csv, line 4: no clip"):
        run_label_csv(labelled_settings, str(bad), reviewer="ana")
    invalid = tmp_path / "invalid.csv"
    invalid.write_text(f"clip_id,label\n{CLIP_A},dog\n{CLIP_B},no good\n")
    with pytest.raises(ConfigError, match=r"invalid\.csv, line 3: 'no good' is not a valid"):
        run_label_csv(labelled_settings, str(invalid), reviewer="ana")
    no_column = tmp_path / "no_column.csv"
    no_column.write_text(f"clip,label\n{CLIP_A},dog\n")
    with pytest.raises(ConfigError, match="needs the columns clip_id and label"):
        run_label_csv(labelled_settings, str(no_column), reviewer="ana")
    assert _feedback(labelled_settings) == []

    good = tmp_path / "good.csv"
    good.write_text(
        f"clip_id,label,reviewer,note\n{CLIP_A},dog,,\n{CLIP_B},bird,bo,seen twice\n{CLIP_A},cat,,\n"
    )
    records = run_label_csv(labelled_settings, str(good), reviewer="ana")
    assert [(r.label, r.previous_label, r.reviewer) for r in records] == [
        ("dog", "cat", "ana"),
        ("bird", None, "bo"),
        ("cat", "dog", "ana"),
    ]
    assert len(_feedback(labelled_settings)) == 3


def test_labelling_publishes_the_thresholds_the_views_read(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(review_threshold=0.45, drift_psi_threshold=0.3)
    with Warehouse.connect(settings.warehouse) as warehouse:
        warehouse.add_clip(_clip(CLIP_A))
    run_label(settings, CLIP_A, "dog", reviewer="ana")
    with Warehouse.connect(settings.warehouse) as warehouse:
        assert warehouse.analyst_settings() == {
            "review_threshold": 0.45,
            "drift_psi_threshold": 0.3,
        }


def test_stpipe_label_records_refuses_and_reads_a_csv(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    with Warehouse.connect(settings.warehouse) as warehouse:
        warehouse.add_clip(_clip(CLIP_A, label="cat"))
        warehouse.add_clip(_clip(CLIP_C))
    done = stpipe(settings, "label", CLIP_A[:10], "dog", "--note", "barks", USER="ana")
    assert f"{CLIP_A}: dog (was cat)" in done.stdout and "recorded by ana" in done.stdout
    done = stpipe(settings, "label", CLIP_C, "bird", "--by", "bo")
    assert "recorded by bo" in done.stdout
    refused = stpipe(settings, "label", "f" * 64, "dog", check=False)
    assert refused.returncode == 1 and "no clip" in _said(refused)
    refused = stpipe(settings, "label", CLIP_A, "bad label", check=False)
    assert refused.returncode == 1 and "not a valid label" in _said(refused)
    refused = stpipe(settings, "label", check=False)
    assert refused.returncode == 1 and "CLIP_ID LABEL or --csv FILE" in _said(refused)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"clip_id,label\n{CLIP_A},cat\n{CLIP_C},1nvalid label\n")
    refused = stpipe(settings, "label", "--csv", str(labels), check=False)
    assert refused.returncode == 1 and "labels.csv, line 3" in _said(refused)
    assert [f.reviewer for f in Warehouse.connect(settings.warehouse).feedback()] == ["ana", "bo"]


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, line wraps undone."""
    return (result.stdout + result.stderr).replace("\n", "")


@pytest.mark.slow
def test_feedback_changes_the_next_model(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    labels = temporal_corpus(warehouse, FeatureStore.from_settings(settings), per_class=12)
    params = TrainParams(epochs=2)
    first = run_train(settings, params, promote=False)
    assert run_train(settings, params, promote=False).reused  # same data: same version

    train_clip = next(c for c in warehouse.clips(labelled=True) if c.split == "train")
    flipped = "down" if labels[train_clip.clip_id] == "up" else "up"
    run_label(settings, train_clip.clip_id, flipped, reviewer="ana")
    second = run_train(settings, params, promote=False)
    assert not second.reused and second.model_version != first.model_version
    first_model, second_model = (
        warehouse.model(first.model_version),
        warehouse.model(second.model_version),
    )
    assert first_model is not None and second_model is not None
    assert first_model.fingerprint != second_model.fingerprint
    learnt = warehouse.query(
        "SELECT model_version, label FROM model_training_clips WHERE clip_id = :c"
        " ORDER BY model_version",
        {"c": train_clip.clip_id},
    )
    assert learnt == [
        {"model_version": first.model_version, "label": labels[train_clip.clip_id]},
        {"model_version": second.model_version, "label": flipped},
    ]
    with Warehouse.connect(settings.warehouse) as fresh:
        assert fresh.feedback_count_since(second_model.created_at) == 0
        assert fresh.feedback_count_since(first_model.created_at) == 1
    warehouse.dispose()


def test_retraining_is_called_for_once_enough_labels_arrived_and_is_off_by_default(
    make_settings: Callable[..., Settings],
) -> None:
    off = make_settings()
    with Warehouse.connect(off.warehouse) as warehouse:
        warehouse.add_clip(_clip(CLIP_A))
        warehouse.add_clip(_clip(CLIP_B))
    run_label(off, CLIP_A, "dog", reviewer="ana")
    assert run_feedback_check(off) == {
        "new_labels": 1,
        "since": None,
        "retrain_min_feedback": 0,
        "retrain": False,
    }
    on = make_settings(retrain_min_feedback=2)
    assert not run_feedback_check(on)["retrain"]
    run_label(on, CLIP_B, "cat", reviewer="ana")
    assert run_feedback_check(on)["new_labels"] == 2 and run_feedback_check(on)["retrain"]
    # Once retraining was called for, those labels do not call for it again ...
    announced = datetime.now(UTC)
    assert run_feedback_check(on, announced) == {
        "new_labels": 0,
        "since": announced.isoformat(),
        "retrain_min_feedback": 2,
        "retrain": False,
    }
    # ... and an announcement older than the newest label counts from that label's model.
    assert run_feedback_check(on, announced - timedelta(days=1))["new_labels"] == 2
