"""`Warehouse.ensure_roles` on the real PostgreSQL server: the pipeline's writer can do its job
(and later migrations), the analyst can read every table and view and change nothing.

Roles are cluster-wide and other tests may set them up at the same time in their own databases
(`ensure_roles` serialises on an advisory lock), so these tests never drop the roles and never
rely on a password being the one they set. The server trusts local connections (tests'
pg_hba), so connecting as a role checks privileges, not passwords.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.warehouse import connection
from pipeline.warehouse.database import ANALYST_ROLE, WRITER_ROLE, Warehouse
from tests.processes import stpipe
from tests.unit.test_warehouse import _clip, _migrations_up_to, _prediction, _register

#: A quote and a backslash: the password is a literal in the DDL and must be escaped.
WRITER_PASSWORD = "writer-'quoted'\\pass"
ANALYST_PASSWORD = "analyst-pass-$1"
INSUFFICIENT_PRIVILEGE = "42501"
READ_ONLY_TRANSACTION = "25006"

#: What an analyst must not be able to do, even in a read-write transaction.
FORBIDDEN = [
    "INSERT INTO model_versions (model_version) VALUES ('v9999')",
    "UPDATE model_versions SET model_uri = '/evil/model'",
    "DELETE FROM predictions",
    "INSERT INTO label_feedback (id, clip_id, label, reviewer, created_at)"
    " VALUES (1, 'c1', 'x', 'analyst', now())",
    "UPDATE analyst_settings SET value = 0",
    "TRUNCATE media_files",
    "DROP TABLE predictions",
    "DROP VIEW latest_predictions",
    "CREATE TABLE analyst_table (x integer)",
    "CREATE VIEW analyst_view AS SELECT 1 AS x",
    "CREATE SCHEMA analyst_schema",
    "CREATE TEMP TABLE analyst_temp (x integer)",
]


def _as_role(url: str, role: str) -> str:
    """``url`` with ``role`` as the user. No password: this server trusts local connections."""
    return sa.engine.make_url(url).set(username=role, password=None).render_as_string(False)


@pytest.fixture
def roles_url(postgres_url: str) -> str:
    """A fresh database with the roles set up twice (the second run must change nothing)."""
    admin = Warehouse.connect(postgres_url)
    try:
        first = admin.ensure_roles(WRITER_PASSWORD, ANALYST_PASSWORD)
        assert admin.ensure_roles(WRITER_PASSWORD, ANALYST_PASSWORD) == first
        assert not any("quoted" in s or ANALYST_PASSWORD in s for s in first), "unmasked"
    finally:
        admin.dispose()
    return postgres_url


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


@pytest.mark.postgres
def test_roles_are_logins_with_passwords_and_no_admin_powers(roles_url: str) -> None:
    engine = sa.create_engine(roles_url)
    try:
        with engine.connect() as conn:
            roles = conn.execute(
                sa.text(
                    "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole,"
                    " rolpassword IS NOT NULL AS has_password FROM pg_authid"
                    " WHERE rolname IN (:w, :a) ORDER BY rolname"
                ),
                {"w": WRITER_ROLE, "a": ANALYST_ROLE},
            ).all()
            owners = conn.execute(
                sa.text(
                    "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S')"
                )
            ).scalars()
            database_acl = conn.execute(
                sa.text("SELECT datacl::text[] FROM pg_database WHERE datname = current_database()")
            ).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in roles] == [
        (ANALYST_ROLE, True, False, False, False, True),
        (WRITER_ROLE, True, False, False, False, True),
    ]
    assert set(owners) == {WRITER_ROLE}
    # An entry "=..." would be PUBLIC's: any login of the cluster could connect.
    assert database_acl and not any(entry.startswith("=") for entry in database_acl)


@pytest.mark.postgres
def test_writer_runs_the_pipeline_and_future_migrations_analyst_reads_everything(
    roles_url: str,
) -> None:
    writer = Warehouse.connect(_as_role(roles_url, WRITER_ROLE))
    try:
        when = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
        for clip_id in ("c1", "c2"):
            writer.add_clip(_clip(clip_id, label="a"))
        _register(writer, "v0001")
        writer.promote_model("v0001")
        writer.upsert_predictions(
            [_prediction("c1", "v0001", "a", 0.9, when), _prediction("c2", "v0001", "b", 0.5, when)]
        )
        with writer.engine.begin() as conn:  # stands for a later migration
            conn.execute(sa.text("CREATE TABLE future_table (id integer PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO future_table VALUES (1)"))
            conn.execute(sa.text("CREATE VIEW future_view AS SELECT id FROM future_table"))
    finally:
        writer.dispose()

    analyst = sa.create_engine(_as_role(roles_url, ANALYST_ROLE))
    try:
        with analyst.connect() as conn:
            relations = conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p')"
                    " ORDER BY c.relname"
                )
            ).scalars()
            counts = {
                name: conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                for name in relations
            }
            low = conn.execute(sa.text("SELECT clip_id FROM low_confidence_predictions"))
            assert low.scalars().all() == ["c2"]
    finally:
        analyst.dispose()
    assert {"media_files", "predictions", "latest_predictions", "schema_migrations"} <= set(counts)
    assert counts["future_table"] == 1 and counts["future_view"] == 1  # default privileges
    assert counts["predictions"] == 2 and counts["latest_predictions"] == 2


@pytest.mark.postgres
def test_analyst_can_change_nothing_even_in_a_read_write_transaction(roles_url: str) -> None:
    writer = Warehouse.connect(_as_role(roles_url, WRITER_ROLE))
    try:
        writer.add_clip(_clip("c1", label="a"))
        _register(writer, "v0001")
    finally:
        writer.dispose()

    # Autocommit: each statement is its own transaction, and the SET below stays in effect.
    analyst = sa.create_engine(_as_role(roles_url, ANALYST_ROLE), isolation_level="AUTOCOMMIT")
    try:
        with analyst.connect() as conn:
            # Read-only by default ...
            with pytest.raises(sa.exc.DBAPIError) as read_only:
                conn.execute(sa.text(FORBIDDEN[0]))
            assert _sqlstate(read_only.value) == READ_ONLY_TRANSACTION
            # ... and without privileges once the analyst turns that off.
            for statement in FORBIDDEN:
                conn.execute(sa.text("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"))
                assert conn.execute(sa.text("SHOW transaction_read_only")).scalar_one() == "off"
                with pytest.raises(sa.exc.DBAPIError) as denied:
                    conn.execute(sa.text(statement))
                assert _sqlstate(denied.value) == INSUFFICIENT_PRIVILEGE, statement
    finally:
        analyst.dispose()

    admin = Warehouse.connect(roles_url)
    try:
        [model] = admin.models()
        assert model.model_uri == "/models/v0001"
        assert admin.get_clip("c1") is not None
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_writer_upgrades_a_warehouse_set_up_before_migration_007_and_the_analyst_still_reads(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = _migrations_up_to("006", tmp_path / "sql-006")
    monkeypatch.setattr(connection, "sql_dir", lambda: older)
    admin = Warehouse.connect(postgres_url)
    try:
        admin.ensure_roles(WRITER_PASSWORD, ANALYST_PASSWORD)
    finally:
        admin.dispose()
    writer = Warehouse.connect(_as_role(postgres_url, WRITER_ROLE))
    try:
        _register(writer, "v0001")
        monkeypatch.undo()
        applied = writer.migrate()  # the writer owns model_versions: it may alter it
        assert applied[0] == "007" and applied[-1] >= "009"
    finally:
        writer.dispose()

    analyst = sa.create_engine(_as_role(postgres_url, ANALYST_ROLE))
    try:
        with analyst.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM model_versions")).mappings().all()
        with analyst.connect() as conn:
            conn.execute(sa.text("SET TRANSACTION READ WRITE"))
            with pytest.raises(sa.exc.DBAPIError) as denied:
                conn.execute(sa.text("DELETE FROM model_versions"))
    finally:
        analyst.dispose()
    assert [r["model_version"] for r in rows] == ["v0001"]
    assert "test_accuracy" not in rows[0]
    assert _sqlstate(denied.value) == INSUFFICIENT_PRIVILEGE

    admin = Warehouse.connect(postgres_url)
    try:  # setting the roles up again after the upgrade still works
        admin.ensure_roles(WRITER_PASSWORD, ANALYST_PASSWORD)
    finally:
        admin.dispose()


def test_roles_need_postgresql(tmp_path: Path) -> None:
    warehouse = Warehouse.connect(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with pytest.raises(ConfigError, match="PostgreSQL"):
            warehouse.ensure_roles(WRITER_PASSWORD, ANALYST_PASSWORD)
    finally:
        warehouse.dispose()


@pytest.mark.postgres
def test_cli_sets_up_the_roles_and_says_which_password_is_missing(
    postgres_url: str, settings: Settings
) -> None:
    passwords = {
        "PIPELINE_WAREHOUSE_WRITER_PASSWORD": WRITER_PASSWORD,
        "PIPELINE_WAREHOUSE_ANALYST_PASSWORD": ANALYST_PASSWORD,
    }
    command = ("warehouse", "roles", "--admin-url", postgres_url)
    done = stpipe(settings, *command, timeout=120, **passwords)
    assert "roles stpipe_writer and stpipe_analyst are set up" in done.stdout
    assert ANALYST_PASSWORD not in done.stdout + done.stderr

    missing = stpipe(
        settings,
        *command,
        check=False,
        timeout=120,
        PIPELINE_WAREHOUSE_WRITER_PASSWORD=WRITER_PASSWORD,
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    [line] = missing.stderr.splitlines()
    assert line.startswith("error: ") and "PIPELINE_WAREHOUSE_ANALYST_PASSWORD" in line
