"""The warehouse's PostgreSQL login roles: the pipeline's writer and the read-only analyst."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from pipeline.errors import ConfigError
from pipeline.warehouse.connection import WarehouseConnection

log = logging.getLogger(__name__)

#: The PostgreSQL login roles `stpipe warehouse roles` manages.
WRITER_ROLE = "stpipe_writer"
ANALYST_ROLE = "stpipe_analyst"
_PG_ROLES_LOCK = 7_391_523


class RolesSql(WarehouseConnection):
    """Creating and granting the login roles (PostgreSQL only)."""

    def ensure_roles(self, writer_password: str, analyst_password: str) -> list[str]:
        """Create or update the warehouse's two login roles (idempotent; needs a connection
        that may create roles, e.g. the database owner or a superuser):

        * ``stpipe_writer``: what the pipeline connects as. It owns the pipeline's tables and
          views (so it can run later migrations) and may create objects in schema ``public``.
        * ``stpipe_analyst``: ``SELECT`` on every table and view, now and (default
          privileges) on those later migrations create; nothing else: no writes, no DDL, no
          temporary tables, read-only transactions by default.

        ``PUBLIC`` loses every privilege on the database and ``CREATE`` on schema ``public``.
        Returns the statements run, passwords masked.

        Raises:
            ConfigError: the warehouse is not PostgreSQL, or a password is empty.
        """
        if self.dialect != "postgresql":
            raise ConfigError(
                "roles need a PostgreSQL warehouse; SQLite has no users (give analysts a "
                "read-only copy, or open it with `sqlite3 -readonly`)"
            )
        if not writer_password or not analyst_password:
            raise ConfigError(
                "set PIPELINE_WAREHOUSE_WRITER_PASSWORD and PIPELINE_WAREHOUSE_ANALYST_PASSWORD "
                "(e.g. from docker/.env) before creating the roles"
            )
        self.migrate()  # the objects must exist before their ownership and grants are set
        with self.engine.connect() as conn:
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            objects = conn.execute(
                sa.text(
                    "SELECT c.relname, c.relkind FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S')"
                    " ORDER BY c.relname"
                )
            ).all()
        statements = _role_statements(database, objects, writer_password, analyst_password)
        with self.engine.begin() as conn:
            # Role names are cluster-wide: serialise with other databases doing the same.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ROLES_LOCK})
            for statement in statements:
                conn.exec_driver_sql(statement)
        masked = [re.sub(r"PASSWORD '(?:[^']|'')*'", "PASSWORD '***'", s) for s in statements]
        log.info("warehouse roles %s and %s are set up on %s", WRITER_ROLE, ANALYST_ROLE, database)
        return masked


def _role_statements(
    database: str, objects: Sequence[Any], writer_password: str, analyst_password: str
) -> list[str]:
    """The statements that give the two roles exactly their privileges on ``database``, whose
    schema ``public`` holds ``objects`` (``(name, pg_class.relkind)`` rows)."""
    kinds = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    db = _quote_ident(database)
    return [
        *_create_login_role(WRITER_ROLE, writer_password),
        *_create_login_role(ANALYST_ROLE, analyst_password),
        f"ALTER ROLE {ANALYST_ROLE} SET default_transaction_read_only = on",
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {WRITER_ROLE}",
        f"GRANT CONNECT ON DATABASE {db} TO {ANALYST_ROLE}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {WRITER_ROLE}",
        f"GRANT USAGE ON SCHEMA public TO {ANALYST_ROLE}",
        *(
            f"ALTER {kinds[kind]} public.{_quote_ident(name)} OWNER TO {WRITER_ROLE}"
            for name, kind in objects
        ),
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ANALYST_ROLE}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ANALYST_ROLE}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ANALYST_ROLE}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {WRITER_ROLE} IN SCHEMA public"
        f" GRANT SELECT ON TABLES TO {ANALYST_ROLE}",
    ]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_login_role(role: str, password: str) -> list[str]:
    """Statements that create ``role`` if missing and (re)set its password. DDL takes no bind
    parameters, so the password is quoted as a literal (standard_conforming_strings is on)."""
    if "\x00" in password:
        raise ConfigError(f"the password for {role} contains a NUL character")
    return [
        "DO $$ BEGIN"
        f" IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
        f" CREATE ROLE {role} LOGIN; END IF; END $$",
        f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        f" PASSWORD {_quote_literal(password)}",
    ]
