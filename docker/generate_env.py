"""Write what ``docker/docker-compose.yml`` needs: ``docker/.env`` (settings, no secret) and
``docker/secrets/`` (one file per secret, mounted by Compose under ``/run/secrets/``).

    python3 docker/generate_env.py                 # docker/secrets/ then docker/.env, once
    python3 docker/generate_env.py --directory D   # D/secrets/ and D/.env instead
    python3 docker/generate_env.py --example > docker/.env.example   # the committed template
    python3 docker/generate_env.py --add-missing   # upgrade: add the secrets a newer version needs

Standard library only, so it runs before anything is installed. Nothing is ever overwritten:
the Fernet key encrypts what Airflow has stored, and PostgreSQL keeps the password it was first
given. ``docker/.env`` is written last, so Compose (which needs it) never starts with half the
secrets. Settings are declared once here (``VARIABLES``), secrets too (``SECRETS``);
tests/unit/test_deployment.py checks the Compose file uses exactly these.

The secrets folder is mode 0700, so other users of this host cannot read it; its files are mode
0644 because Compose mounts them as they are, and the containers read them as other users
(AIRFLOW_UID, and PostgreSQL's own user).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: User names SimpleAuthManager can hold (':' and ',' separate users and roles in its list).
ADMIN_USER_PATTERN = re.compile(r"[A-Za-z0-9_.@-]+")
#: The image's user; also what a root user of this host should run the deployment as.
DEFAULT_AIRFLOW_UID = 50000


def random_password() -> str:
    """32 characters of ``[A-Za-z0-9_-]`` (192 bits): safe unescaped in URLs."""
    return secrets.token_urlsafe(24)


def random_fernet_key() -> str:
    """A Fernet key: URL-safe base64 of 32 random bytes (what ``Fernet.generate_key`` makes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def host_uid() -> int:
    """The uid the containers run as: this user's, so the ./data it owns stays writable; 50000
    (the image's user) for root, as containers should not run as root."""
    uid = os.getuid()
    return uid if uid != 0 else DEFAULT_AIRFLOW_UID


@dataclass(frozen=True)
class Variable:
    """One line of docker/.env: its comment, its value in the template, and how the real value
    is made. None of them is a secret (those are in ``SECRETS``)."""

    name: str
    comment: str
    generate: Callable[[], str]
    example: str


def _fixed(value: str) -> Callable[[], str]:
    return lambda: value


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "AIRFLOW_UID",
        "The user every Airflow container runs as (group 0), and who owns ./data: your uid\n"
        "(`id -u`), or 50000 (the image's user) if you are root.",
        lambda: str(host_uid()),
        str(DEFAULT_AIRFLOW_UID),
    ),
    Variable(
        "AIRFLOW_ADMIN_USER",
        "Airflow UI/API login with the admin role (letters, digits, _ . @ -); its password is\n"
        "secrets/airflow_admin_password.",
        _fixed("admin"),
        "admin",
    ),
    Variable(
        "AIRFLOW_BIND_ADDRESS",
        "Host address the API server (port 8080) is published on: 127.0.0.1 = this host only;\n"
        "0.0.0.0 = every interface (only behind a firewall or a TLS proxy).",
        _fixed("127.0.0.1"),
        "127.0.0.1",
    ),
    Variable(
        "STPIPE_WORKER_CONCURRENCY",
        "Tasks each Celery worker runs at once ([celery] worker_concurrency).",
        _fixed("2"),
        "2",
    ),
    Variable(
        "STPIPE_CNN_POOL_SLOTS",
        "Slots of the Airflow pool cnn (VGG-16 tasks at once): workers x STPIPE_WORKER_CONCURRENCY.\n"
        "After `up --scale airflow-worker=N`, set it to N x concurrency and re-run\n"
        "`docker compose ... up airflow-init` (or `airflow pools set cnn SLOTS ...`).",
        _fixed("2"),
        "2",
    ),
)


@dataclass(frozen=True)
class Secret:
    """One file of docker/secrets/: what it holds and how it is made from the other secrets'
    random values (``base``: name -> value)."""

    name: str
    comment: str
    make: Callable[[Mapping[str, str]], str]


def _base(name: str) -> Callable[[Mapping[str, str]], str]:
    return lambda base: base[name]


def _postgres_url(driver: str, database: str) -> Callable[[Mapping[str, str]], str]:
    return lambda base: (
        f"postgresql+{driver}://airflow:{base['postgres_password']}@postgres:5432/{database}"
    )


def _redis_conf(base: Mapping[str, str]) -> str:
    # A config file, not --requirepass: a command line is visible to every user of the host.
    return f"requirepass {base['redis_password']}"


def _connections(base: Mapping[str, str]) -> str:
    warehouse = {
        "conn_type": "postgres",
        "host": "postgres",
        "port": 5432,
        "schema": "warehouse",
        "login": "stpipe_writer",
        "password": base["warehouse_writer_password"],
    }
    return json.dumps({"stpipe_warehouse": warehouse}, indent=2)


#: Random values the secrets are made of: name -> generator.
BASE_VALUES: dict[str, Callable[[], str]] = {
    "postgres_password": random_password,
    "airflow_admin_password": random_password,
    "airflow_jwt_secret": random_password,
    "airflow_api_secret_key": random_password,
    "airflow_fernet_key": random_fernet_key,
    "warehouse_writer_password": random_password,
    "warehouse_analyst_password": random_password,
    "redis_password": random_password,
}

SECRETS: tuple[Secret, ...] = (
    Secret(
        "postgres_password",
        "PostgreSQL superuser airflow (read when the postgres-data volume is created)",
        _base("postgres_password"),
    ),
    Secret(
        "airflow_db_url",
        "Airflow's metadata DB as airflow ([database] sql_alchemy_conn)",
        _postgres_url("psycopg2", "airflow"),
    ),
    Secret(
        "airflow_fernet_key",
        "encrypts connections and variables in the metadata DB ([core] fernet_key)",
        _base("airflow_fernet_key"),
    ),
    Secret(
        "airflow_jwt_secret",
        "signs API and task tokens ([api_auth] jwt_secret)",
        _base("airflow_jwt_secret"),
    ),
    Secret(
        "airflow_api_secret_key",
        "signs the API server's session cookies ([api] secret_key)",
        _base("airflow_api_secret_key"),
    ),
    Secret(
        "airflow_admin_password",
        "AIRFLOW_ADMIN_USER's password (airflow-init writes it where the API server reads it)",
        _base("airflow_admin_password"),
    ),
    Secret(
        "warehouse_admin_url",
        "the warehouse as the superuser airflow (airflow-init: stpipe warehouse roles)",
        _postgres_url("psycopg", "warehouse"),
    ),
    Secret(
        "warehouse_writer_password",
        "warehouse role stpipe_writer (what the pipeline connects as; owns the tables)",
        _base("warehouse_writer_password"),
    ),
    Secret(
        "warehouse_analyst_password",
        "warehouse role stpipe_analyst (read-only, for analysts)",
        _base("warehouse_analyst_password"),
    ),
    Secret(
        "redis_conf",
        "Redis's configuration: the password of its default user (requirepass)",
        _redis_conf,
    ),
    Secret(
        "celery_broker_url",
        "the Redis broker with its password ([celery] broker_url)",
        lambda base: f"redis://:{base['redis_password']}@redis:6379/0",
    ),
    Secret(
        "airflow_connections",
        "Airflow connections of the workers' secrets backend: stpipe_warehouse as stpipe_writer",
        _connections,
    ),
)

_HEADER = """\
# docker/.env: the settings of docker/docker-compose.yml, written by
#   python3 docker/generate_env.py
# Secrets are not here but in docker/secrets/ (git-ignored, written by the same command).
"""

_EXAMPLE_HEADER = """\
# Template of docker/.env (the settings of docker/docker-compose.yml). Do not copy it: generate
# docker/.env and the secrets in docker/secrets/ with
#   python3 docker/generate_env.py
"""


def render_env(admin_user: str = "admin", *, example: bool = False) -> str:
    """The text of a docker/.env, or of its template with ``example``."""
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


def render_secrets() -> dict[str, str]:
    """File name -> content of every secret, from fresh random values. No trailing newline:
    Airflow's ``*_CMD`` options (``cat /run/secrets/...``) take a command's output as it is."""
    base = {name: generate() for name, generate in BASE_VALUES.items()}
    return {secret.name: secret.make(base) for secret in SECRETS}


class _Reads(dict[str, str]):
    """The random values, remembering which of them were read."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def secret_sources() -> dict[str, set[str]]:
    """Secret name -> the random values it is made of."""
    sources = {}
    for secret in SECRETS:
        base = _Reads({name: "" for name in BASE_VALUES})
        secret.make(base)
        sources[secret.name] = base.read
    return sources


def missing_secrets(directory: Path) -> dict[str, str]:
    """The secrets this version needs that ``directory`` lacks (a deployment made by an earlier
    version), made from fresh random values.

    Raises:
        ValueError: a missing secret shares a random value with one that exists (it cannot be
            made to agree with it).
    """
    present = {path.name for path in directory.iterdir()}
    sources = secret_sources()
    missing = [secret.name for secret in SECRETS if secret.name not in present]
    for name in missing:
        shared = sorted(other for other in present & set(sources) if sources[other] & sources[name])
        if shared:
            raise ValueError(
                f"{directory / name} is missing but {', '.join(shared)} (made from the same "
                f"random value) exists: restore it from a backup, or remove {', '.join(shared)} "
                "too so that both are made again"
            )
    fresh = render_secrets()
    return {name: fresh[name] for name in missing}


def add_secrets(directory: Path, contents: Mapping[str, str]) -> None:
    """Add ``contents`` to an existing secrets folder, each file created at once with mode 0644
    and never replacing one.

    Raises:
        FileExistsError: one of them appeared meanwhile (those before it were added).
    """
    for name, text in contents.items():
        write_new_file(directory / name, text, mode=0o644)


def write_secrets(directory: Path, contents: Mapping[str, str]) -> None:
    """Create ``directory`` (mode 0700) holding ``contents`` (mode 0644 files), all at once: the
    files are written into a temporary folder beside it, which is then renamed.

    Raises:
        FileExistsError: ``directory`` exists.
    """
    if directory.exists():
        raise FileExistsError(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".secrets-"))  # mode 0700
    try:
        for name, text in contents.items():
            path = tmp / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(path, 0o644)  # whatever the umask
        os.rename(tmp, directory)  # fails if directory appeared meanwhile and is not empty
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_new_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Create ``path`` holding ``text`` with ``mode``, all at once; an existing file is never
    replaced.

    Raises:
        FileExistsError: ``path`` exists.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp: mode 0600
            out.write(text)
        os.chmod(tmp, mode)  # whatever the umask
        os.link(tmp, path)  # unlike a rename, fails if path exists
    finally:
        os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--directory",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="write DIRECTORY/.env and DIRECTORY/secrets/ (default: docker/)",
    )
    parser.add_argument("--admin-user", default="admin", help="Airflow admin login (admin)")
    parser.add_argument(
        "--example", action="store_true", help="print the template of docker/.env instead"
    )
    parser.add_argument(
        "--add-missing",
        action="store_true",
        help="upgrade a deployment: add only the secrets DIRECTORY/secrets/ lacks (a newer "
        "version needs them), keeping every existing one",
    )
    args = parser.parse_args(argv)
    try:
        env_text = render_env(args.admin_user, example=args.example)
    except ValueError as exc:
        parser.error(str(exc))
    if args.example:
        sys.stdout.write(env_text)
        return 0
    env_file, secrets_dir = args.directory / ".env", args.directory / "secrets"
    if args.add_missing:
        return _add_missing(secrets_dir)
    existing = [str(path) for path in (env_file, secrets_dir) if path.exists()]
    if existing:
        sys.stderr.write(
            f"{' and '.join(existing)} exist(s); they hold the keys of data already stored. "
            "Remove both first if you really want new secrets.\n"
        )
        return 1
    try:
        write_secrets(secrets_dir, render_secrets())
        write_new_file(env_file, env_text)
    except FileExistsError as exc:
        sys.stderr.write(f"{exc} appeared while writing; nothing was overwritten.\n")
        return 1
    sys.stderr.write(f"wrote {secrets_dir}/ (mode 0700) and {env_file}\n")
    return 0


def _add_missing(secrets_dir: Path) -> int:
    if not secrets_dir.is_dir():
        sys.stderr.write(f"{secrets_dir} does not exist: run without --add-missing first.\n")
        return 1
    try:
        missing = missing_secrets(secrets_dir)
        add_secrets(secrets_dir, missing)
    except (ValueError, FileExistsError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    if missing:
        sys.stderr.write(f"added {', '.join(sorted(missing))} to {secrets_dir}/\n")
    else:
        sys.stderr.write(f"{secrets_dir}/ has every secret already\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
