"""Write the ``docker/.env`` that ``docker/docker-compose.yml`` needs, with fresh random secrets.

    python3 docker/generate_env.py --output docker/.env   # refuses to overwrite; mode 0600
    python3 docker/generate_env.py > docker/.env          # the same on stdout
    python3 docker/generate_env.py --example > docker/.env.example   # the committed template

Standard library only, so it runs before anything is installed. The variables are declared once
here (``VARIABLES``); ``docker/.env.example`` is this script's ``--example`` output.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: User names SimpleAuthManager can hold (':' and ',' separate users and roles in its list).
ADMIN_USER_PATTERN = re.compile(r"[A-Za-z0-9_.@-]+")


def random_password() -> str:
    """32 characters of ``[A-Za-z0-9_-]`` (192 bits): safe unescaped in URLs and .env files."""
    return secrets.token_urlsafe(24)


def random_fernet_key() -> str:
    """A Fernet key: URL-safe base64 of 32 random bytes (what ``Fernet.generate_key`` makes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class Variable:
    """One line of docker/.env: its comment, its value in the template (empty for a secret, so
    a copied template stops `docker compose`), and how a real value is made."""

    name: str
    comment: str
    generate: Callable[[], str]
    example: str = ""


def _fixed(value: str) -> Callable[[], str]:
    return lambda: value


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "AIRFLOW_ADMIN_USER",
        "Airflow UI/API login with the admin role (letters, digits, _ . @ -).",
        _fixed("admin"),
        "admin",
    ),
    Variable("AIRFLOW_ADMIN_PASSWORD", "Its password.", random_password),
    Variable(
        "AIRFLOW_BIND_ADDRESS",
        "Host address the API server (port 8080) is published on: 127.0.0.1 = this host only;\n"
        "0.0.0.0 = every interface (only behind a firewall or a TLS proxy).",
        _fixed("127.0.0.1"),
        "127.0.0.1",
    ),
    Variable(
        "AIRFLOW_JWT_SECRET",
        "Signs Airflow's API and task tokens ([api_auth] jwt_secret), shared by all components.",
        random_password,
    ),
    Variable(
        "AIRFLOW_API_SECRET_KEY",
        "Signs the API server's session cookies ([api] secret_key).",
        random_password,
    ),
    Variable(
        "AIRFLOW_FERNET_KEY",
        "Encrypts connection passwords and variables in Airflow's metadata DB\n"
        "([core] fernet_key): URL-safe base64 of 32 bytes. Keep it: with a new key the stored\n"
        "secrets are unreadable.",
        random_fernet_key,
    ),
    Variable(
        "POSTGRES_PASSWORD",
        "PostgreSQL superuser `airflow` (Airflow's metadata DB; creates the warehouse roles).\n"
        "Read when the postgres-data volume is created; later, change it with ALTER ROLE too.",
        random_password,
    ),
    Variable(
        "PIPELINE_WAREHOUSE_WRITER_PASSWORD",
        "Warehouse role stpipe_writer: what the pipeline connects as (owns the tables).",
        random_password,
    ),
    Variable(
        "PIPELINE_WAREHOUSE_ANALYST_PASSWORD",
        "Warehouse role stpipe_analyst: read-only (SELECT on every table and view) for analysts.",
        random_password,
    ),
)

_HEADER = """\
# docker/.env: settings and secrets of docker/docker-compose.yml, written by
#   python3 docker/generate_env.py --output docker/.env
# It is git-ignored; keep it readable only by you (mode 0600). Write values without quotes;
# passwords go into database URLs, so keep to letters, digits, - and _.
"""

_EXAMPLE_HEADER = """\
# Template of docker/.env (the settings and secrets of docker/docker-compose.yml). Do not fill
# it in by hand: generate the real file with random secrets,
#   python3 docker/generate_env.py --output docker/.env
# Empty secrets here stop `docker compose` with a message, so a copy of this file cannot run.
"""


def render_env(admin_user: str = "admin", *, example: bool = False) -> str:
    """The text of a docker/.env: fresh random secrets, or the template with ``example``."""
    if not ADMIN_USER_PATTERN.fullmatch(admin_user):
        raise ValueError(f"admin user {admin_user!r} may hold only letters, digits and _ . @ -")
    lines = [_EXAMPLE_HEADER if example else _HEADER]
    for variable in VARIABLES:
        if example:
            value = variable.example
        elif variable.name == "AIRFLOW_ADMIN_USER":
            value = admin_user
        else:
            value = variable.generate()
        lines.extend(f"# {line}" for line in variable.comment.splitlines())
        lines.append(f"{variable.name}={value}\n")
    return "\n".join(lines)


def write_new_file(path: str, text: str) -> None:
    """Create ``path`` holding ``text`` with mode 0600, all at once; an existing file is never
    replaced (it holds the keys that encrypt data already stored).

    Raises:
        FileExistsError: ``path`` exists.
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".env-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp: mode 0600
            out.write(text)
        os.link(tmp, path)  # unlike a rename, fails if path exists
    finally:
        os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="write this file (mode 0600; refuses to overwrite)")
    parser.add_argument("--admin-user", default="admin", help="Airflow admin login (admin)")
    parser.add_argument(
        "--example", action="store_true", help="the template with empty secrets instead"
    )
    args = parser.parse_args(argv)
    try:
        text = render_env(args.admin_user, example=args.example)
    except ValueError as exc:
        parser.error(str(exc))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_new_file(args.output, text)
    except FileExistsError:
        sys.stderr.write(
            f"{args.output} exists; it holds the keys of data already stored. Remove it first "
            "if you really want new secrets.\n"
        )
        return 1
    sys.stderr.write(f"wrote {args.output} (mode 0600)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
