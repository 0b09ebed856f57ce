"""docs/analysts.md against the warehouse it documents: every query runs on the database its
first line names (SQLite, PostgreSQL or both), every column listed exists, and every table and
view of the live schema is listed with all its columns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.warehouse.database import Warehouse

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
DIALECTS = ("sqlite", "postgresql")
CLASSES = ("colours_forward", "colours_reverse", "tones_rising", "tones_falling")
CLIP_X = "3fa2" + "0" * 60  # the clip the doc's examples ask about (LIKE '3fa2%')


def sql_examples(text: str) -> list[tuple[set[str], str]]:
    """The ```sql blocks: (dialects named on the first line, the SQL)."""
    examples = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.DOTALL):
        first, _, body = block.partition("\n")
        tag = re.fullmatch(r"--\s*([a-z, ]+)", first.strip())
        assert tag, f"a ```sql block must start with '-- sqlite' and/or 'postgresql':\n{block}"
        dialects = {d.strip() for d in tag.group(1).split(",")}
        assert dialects <= set(DIALECTS), f"unknown dialect in {first!r}"
        examples.append((dialects, body.strip().rstrip(";")))
    return examples


def documented_columns(text: str) -> dict[str, list[str]]:
    """Each ``#### `name` `` section's column table: object name -> column names."""
    objects: dict[str, list[str]] = {}
    for section in re.split(r"^#### ", text, flags=re.MULTILINE)[1:]:
        name = re.match(r"`(\w+)`", section)
        assert name, f"a #### heading names one table or view in backticks: {section[:60]!r}"
        body = section.split("\n## ", 1)[0]
        objects[name.group(1)] = re.findall(r"^\| `(\w+)` \|", body, re.MULTILINE)
    return objects


def diagram_entities(text: str) -> dict[str, list[str]]:
    """Each Mermaid erDiagram entity block: name -> attribute names."""
    entities: dict[str, list[str]] = {}
    for diagram in re.findall(r"```mermaid\n(.*?)```", text, re.DOTALL):
        assert diagram.lstrip().startswith("erDiagram")
        for name, body in re.findall(r"^\s*(\w+) \{\n(.*?)^\s*\}", diagram, re.M | re.DOTALL):
            entities[name] = [line.split()[1] for line in body.splitlines() if line.strip()]
    return entities


def diagram_names(text: str) -> set[str]:
    """Every table or view a diagram shows: entities and both ends of each relationship."""
    names: set[str] = set()
    for diagram in re.findall(r"```mermaid\n(.*?)```", text, re.DOTALL):
        names |= set(re.findall(r"^\s*(\w+) \{", diagram, re.MULTILINE))
        for left, right in re.findall(r"^\s*(\w+) \S+ (\w+) :", diagram, re.MULTILINE):
            names |= {left, right}
    return names


def live_schema(warehouse: Warehouse) -> dict[str, list[str]]:
    """Every table and view: name -> its columns, read from the database's catalogue."""
    with warehouse.engine.connect() as conn:
        if warehouse.dialect == "sqlite":
            names = conn.execute(
                sa.text(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            ).scalars()
            return {
                name: [row[1] for row in conn.execute(sa.text(f'PRAGMA table_info("{name}")'))]
                for name in names
            }
        rows = conn.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
            )
        )
        schema: dict[str, list[str]] = {}
        for table, column in rows:
            schema.setdefault(table, []).append(column)
        return schema


def _seed(warehouse: Warehouse) -> None:
    """A production model that scored clip X (labelled, reviewed, two segments), an unlabelled
    clip below the review threshold, a quarantined file, and the model's training clips."""
    now = datetime.now(UTC)
    clips = {CLIP_X: "colours_forward", "b" * 64: None, "c" * 64: "tones_rising"}
    for clip_id, label in clips.items():
        warehouse.add_clip(
            {
                "clip_id": clip_id,
                "uri": f"/landing/{clip_id[:8]}.mp4",
                "media_uri": f"/media/{clip_id}.mp4",
                "modality": "video",
                "label": label,
                "split": "test",
                "status": "ok",
                "error": None,
                "size_bytes": 1000,
                "duration_seconds": 20.0,
            }
        )
    warehouse.add_clip(
        {
            "clip_id": "d" * 64,
            "uri": "/landing/bad.mp4",
            "media_uri": None,
            "modality": None,
            "label": None,
            "split": "train",
            "status": "ok",
            "error": None,
            "size_bytes": 10,
        }
    )
    warehouse.quarantine_clip("d" * 64, "cannot decode: truncated file")
    warehouse.register_model(
        model_version="v0001",
        model_uri="/models/v0001",
        settings_hash="h",
        fingerprint="f",
        class_names=list(CLASSES),
        metrics={"accuracy": 0.9},
        streams=["video"],
    )
    warehouse.promote_model("v0001")
    probabilities = [
        {
            "colours_forward": 0.7,
            "colours_reverse": 0.2,
            "tones_rising": 0.05,
            "tones_falling": 0.05,
        },
        {
            "colours_forward": 0.4,
            "colours_reverse": 0.35,
            "tones_rising": 0.2,
            "tones_falling": 0.05,
        },
    ]
    rows = [
        {
            "clip_id": clip_id,
            "model_version": "v0001",
            "predicted_label": "colours_forward",
            "confidence": probs["colours_forward"],
            "probabilities": probs,
            "scored_at": now,
            "run_id": "scheduled__test",
            "logical_date": now - timedelta(days=1),
            "n_segments": 2 if clip_id == CLIP_X else 1,
        }
        for clip_id, probs in zip((CLIP_X, "b" * 64), probabilities, strict=True)
    ]
    warehouse.upsert_predictions(rows)
    warehouse.upsert_segment_predictions(
        {
            **rows[0],
            "segment_index": index,
            "start_seconds": 10.0 * index,
            "end_seconds": 10.0 * (index + 1),
            "predicted_label": label,
        }
        for index, label in enumerate(("colours_forward", "colours_reverse"))
    )
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO model_training_clips (model_version, clip_id, split, label)"
                " VALUES ('v0001', :clip, 'train', 'tones_rising')"
            ),
            {"clip": "c" * 64},
        )
        conn.execute(
            sa.text(
                "INSERT INTO label_feedback"
                " (id, clip_id, label, previous_label, reviewer, note, created_at)"
                " VALUES (1, :clip, 'colours_reverse', 'colours_forward', 'ana', 'order', :t)"
            ),
            {"clip": CLIP_X, "t": now},
        )


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    """A migrated warehouse of each dialect holding a few rows for the queries to find."""
    wh = Warehouse.connect(warehouse_url)
    _seed(wh)
    yield wh
    wh.dispose()


def test_the_doc_has_examples_for_both_databases() -> None:
    examples = sql_examples(DOC.read_text())
    for dialect in DIALECTS:
        assert sum(dialect in dialects for dialects, _ in examples) >= 15


def test_every_example_query_runs_on_its_database(warehouse: Warehouse) -> None:
    failures = []
    results: dict[str, list[Any]] = {}
    for dialects, sql in sql_examples(DOC.read_text()):
        if warehouse.dialect not in dialects:
            continue
        try:
            with warehouse.engine.connect() as conn:
                results[sql] = list(conn.execute(sa.text(sql)))
        except sa.exc.DBAPIError as exc:
            failures.append(f"{sql}\n  -> {exc.orig}")
    assert not failures, "\n\n".join(failures)
    # The JSON examples read the seeded probabilities, not only parse.
    [per_class] = [rows for sql, rows in results.items() if "AS class" in sql]
    assert {row.clip_id for row in per_class} == {CLIP_X}
    assert (per_class[0][1], float(per_class[0][2])) == ("colours_forward", 0.7)
    [by_column] = [rows for sql, rows in results.items() if "AS p_colours_forward" in sql]
    assert sorted(float(row.p_colours_forward) for row in by_column) == [0.4, 0.7]
    [queue] = [rows for sql, rows in results.items() if "FROM review_queue" in sql]
    assert [row.clip_id for row in queue] == ["b" * 64]


def test_the_documented_columns_are_the_live_schema(warehouse: Warehouse) -> None:
    documented = documented_columns(DOC.read_text())
    live = live_schema(warehouse)
    assert sorted(documented) == sorted(live), "tables and views documented vs in the schema"
    for name, columns in live.items():
        assert sorted(documented[name]) == sorted(columns), f"columns of {name}"
        assert len(documented[name]) == len(set(documented[name])), f"{name} lists one twice"


def test_the_diagrams_show_every_table_and_view_with_columns_that_exist(
    warehouse: Warehouse,
) -> None:
    text = DOC.read_text()
    live = live_schema(warehouse)
    assert diagram_names(text) == set(live)
    entities = diagram_entities(text)
    for name, attributes in entities.items():
        assert set(attributes) <= set(live[name]), f"diagram columns of {name}"
    for name in sa.inspect(warehouse.engine).get_table_names():  # drawn with every column
        assert sorted(entities[name]) == sorted(live[name]), name


def test_json_probabilities_in_the_doc_match_what_scoring_writes(warehouse: Warehouse) -> None:
    """The doc reads probabilities as a JSON object keyed by class: check the stored form."""
    [row] = warehouse.query(
        "SELECT probabilities FROM predictions WHERE clip_id = :c", {"c": CLIP_X}
    )
    assert set(json.loads(row["probabilities"])) == set(CLASSES)
