"""The Compose deployment starts as documented and is secure by default, checked without a Docker
engine: Debian's ``docker-compose`` (1.29, which validates against the compose-spec schema)
resolves docker/docker-compose.yml with a generated docker/.env and secrets; every service runs
the command of tests/deployment_components.py and has a health check whose command Airflow 3.3.2
has; no secret is in the files or in an environment variable; nothing is published beyond
127.0.0.1; and docker/airflow-init.sh runs for real (SQLite metadata DB) and again."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.deployment_components import COMPONENTS

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
INIT_SCRIPT = DOCKER / "airflow-init.sh"
GENERATE_ENV = DOCKER / "generate_env.py"
ENV_EXAMPLE = DOCKER / ".env.example"
#: The message a missing docker/.env stops `docker compose` with.
MISSING_ENV_MESSAGE = "generate docker/.env and docker/secrets/ with python3 docker/generate_env.py"

#: Compose's interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default},
#: ${VAR:?error}, ${VAR?error}, ${VAR:+alternative}, ${VAR+alternative}.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|JWT|KEY|CONN|TOKEN")
_URL_CREDENTIALS = re.compile(r"://(?P<user>[^:/@\s]+):(?P<password>[^@\s]*)@")
#: Environment variables whose names sound secret but whose values are not: a class name, and
#: a path in the airflow-auth volume (the file there is written by airflow-init, mode 0600).
_NOT_SECRET_VALUES = {
    "AIRFLOW__WORKERS__SECRETS_BACKEND",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
}
#: What Airflow's conf.getboolean reads as true.
_TRUTHY = {"t", "true", "1", "yes", "y", "on"}
#: Services that are not Airflow components.
_BACKING_SERVICES = {"postgres", "redis"}
#: The environment every test script here runs with: no Airflow or pipeline settings of ours.
_CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PIPELINE_"))}
_CLEAN_ENV = {k: v for k, v in _CLEAN_ENV.items() if not k.startswith("STPIPE_")}


def referenced_names(text: str) -> set[str]:
    return {m["name"] for m in _REFERENCE.finditer(text) if m["name"]}


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; every other line must be blank or a comment."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(\S*)", line)
        assert match, f"not a KEY=VALUE line: {line!r}"
        assert match[1] not in values, f"{match[1]} set twice"
        values[match[1]] = match[2]
    return values


def generate_env(*args: str) -> subprocess.CompletedProcess[str]:
    # -I -S: no site-packages, so the script must need the standard library only.
    return subprocess.run(
        [sys.executable, "-I", "-S", str(GENERATE_ENV), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def generate_into(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Run docker/generate_env.py for ``directory``; its .env values and its secrets."""
    result = generate_env("--directory", str(directory))
    assert result.returncode == 0, result.stderr
    env = parse_env((directory / ".env").read_text())
    secrets = {p.name: p.read_text() for p in (directory / "secrets").iterdir()}
    return env, secrets


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail(
            "docker-compose is not installed: `apt-get install -y --no-install-recommends "
            "docker-compose` (Debian's 1.29; .ci/run installs it)"
        )
    return found


def compose_config(directory: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` of a copy of docker-compose.yml in ``directory``, with the
    .env there (if any) and none of this process's variables."""
    shutil.copy(COMPOSE, directory / "docker-compose.yml")
    return subprocess.run(
        [docker_compose(), "--project-directory", str(directory), "-f", COMPOSE.name, "config"],
        cwd=directory,
        env=_CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Deployment:
    """docker-compose.yml resolved by docker-compose with a freshly generated .env and secrets."""

    def __init__(self, root: Path) -> None:
        directory = root / "docker"
        directory.mkdir()
        self.env, self.secrets = generate_into(directory)
        result = compose_config(directory)
        assert result.returncode == 0, result.stderr
        self.text = result.stdout
        self.document: dict[str, Any] = yaml.safe_load(result.stdout)
        self.services: dict[str, dict[str, Any]] = self.document["services"]

    def airflow_services(self) -> dict[str, dict[str, Any]]:
        return {n: s for n, s in self.services.items() if n not in _BACKING_SERVICES}


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = Path(tempfile.mkdtemp(prefix="stpipe-compose-"))
    try:
        yield Deployment(root)
    finally:
        shutil.rmtree(root)


def raw_compose() -> dict[str, Any]:
    """The file as written (YAML merge keys resolved, ${...} not)."""
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict) and document["services"]
    return document


# The Compose file ---------------------------------------------------------------------------


def test_every_airflow_service_runs_the_command_of_deployment_components(
    deployment: Deployment,
) -> None:
    commands = {n: tuple(s["command"]) for n, s in deployment.airflow_services().items()}
    assert commands == COMPONENTS


def test_every_long_running_airflow_service_has_a_health_check(deployment: Deployment) -> None:
    for name, service in deployment.airflow_services().items():
        if name == "airflow-init":  # one-shot: the others wait for it to exit 0
            assert service["healthcheck"] in ({"disable": True}, {"test": ["NONE"]})
            assert service["restart"] == "no"
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name
        assert service["restart"] == "unless-stopped", name
    for name in _BACKING_SERVICES:
        assert deployment.services[name]["healthcheck"]["test"], name
    # Nothing starts before what it needs is healthy (or, for airflow-init, done).
    for name, service in deployment.airflow_services().items():
        for needed, condition in service["depends_on"].items():
            expected = "service_completed_successfully" if needed == "airflow-init" else None
            assert condition["condition"] == (expected or "service_healthy"), (name, needed)
        if name != "airflow-init":
            assert "airflow-init" in service["depends_on"], name


def _health_commands(deployment: Deployment) -> dict[str, str]:
    return {
        name: " ".join(service["healthcheck"]["test"][1:])
        for name, service in deployment.airflow_services().items()
        if name != "airflow-init"
    }


def test_health_checks_ask_what_each_component_serves(deployment: Deployment) -> None:
    checks = _health_commands(deployment)
    assert "http://127.0.0.1:8080/api/v2/monitor/health" in checks["airflow-apiserver"]
    assert "http://127.0.0.1:8974/health" in checks["airflow-scheduler"]
    for service, job in (
        ("airflow-dag-processor", "DagProcessorJob"),
        ("airflow-triggerer", "TriggererJob"),
    ):
        assert checks[service] == f"airflow jobs check --job-type {job} --local"
    assert checks["airflow-worker"] == (
        "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping "
        '-d "celery@$${HOSTNAME}"'  # escaped for Compose: the container's shell expands it
    )
    environment = deployment.services["airflow-scheduler"]["environment"]
    assert environment["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() in _TRUTHY


@pytest.mark.slow
def test_the_health_check_commands_exist_in_this_airflow(deployment: Deployment) -> None:
    """Each command and URL the health checks use, looked up in the installed Airflow."""
    # The monitor routes are mounted on the public router outside its authenticated part, so
    # the API server's check needs no login.
    check = (
        "import json\n"
        "from airflow.configuration import conf\n"
        "from airflow.providers.celery.executors.celery_executor import app\n"
        "from airflow.api_fastapi.core_api.routes.public import public_router\n"
        "print(json.dumps({'port': conf.getint('scheduler', 'scheduler_health_check_server_port'),"
        " 'celery': app.main, 'paths': [r.path for r in public_router.routes]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["port"] == 8974 and found["celery"]
    assert "/api/v2/monitor/health" in found["paths"]
    jobs = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "jobs", "check", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for option in ("--job-type", "DagProcessorJob", "TriggererJob", "--local"):
        assert option in jobs


def test_published_ports_bind_to_localhost_by_default(deployment: Deployment) -> None:
    published = {n: s["ports"] for n, s in deployment.services.items() if s.get("ports")}
    assert list(published) == ["airflow-apiserver"]
    [port] = published["airflow-apiserver"]
    assert port.startswith("127.0.0.1:8080:8080"), port
    # The written file: never a bare port (every interface); the operator may choose an address.
    for name, service in raw_compose()["services"].items():
        for entry in service.get("ports") or []:
            assert str(entry).startswith("${AIRFLOW_BIND_ADDRESS:-127.0.0.1}:"), (name, entry)


def test_no_secret_is_in_the_compose_file_or_an_environment_variable(
    deployment: Deployment,
) -> None:
    # Resolved with real secrets, the configuration holds none of them.
    for name, value in deployment.secrets.items():
        assert value and value not in deployment.text, f"secret {name} is in the configuration"
    checked = 0
    for name, service in deployment.services.items():
        for key, value in (service.get("environment") or {}).items():
            assert not _URL_CREDENTIALS.search(str(value)), f"{name}: {key} holds credentials"
            if _SECRET_NAME.search(key) and key not in _NOT_SECRET_VALUES:
                checked += 1
                assert "/run/secrets/" in str(value), f"{name}: {key}={value}"
    assert checked >= 6 * 4  # the database URL and three keys in each Airflow service
    # The written file interpolates no variable into a secret-named setting, and docker/.env
    # holds no secret.
    for service in raw_compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if _SECRET_NAME.search(key):
                assert not referenced_names(str(value)), key
    assert not [key for key in deployment.env if _SECRET_NAME.search(key)]


def test_each_secret_is_a_generated_file_given_only_to_the_services_that_need_it(
    deployment: Deployment,
) -> None:
    declared = raw_compose()["secrets"]
    assert {name: spec["file"] for name, spec in declared.items()} == {
        name: f"./secrets/{name}" for name in deployment.secrets
    }, "docker/generate_env.py and the Compose file disagree on the secrets"

    def given(service: str) -> set[str]:
        return {s["source"] for s in deployment.services[service].get("secrets") or []}

    common = {
        "airflow_db_url",
        "airflow_fernet_key",
        "airflow_jwt_secret",
        "airflow_api_secret_key",
        "celery_broker_url",
    }
    assert given("postgres") == {"postgres_password"}
    assert given("redis") == {"redis_conf"}
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert given(service) == common, service
    assert given("airflow-triggerer") == common
    assert given("airflow-worker") == common | {"airflow_connections"}
    assert given("airflow-init") == common | {
        "airflow_admin_password",
        "warehouse_admin_url",
        "warehouse_writer_password",
        "warehouse_analyst_password",
    }
    # Every /run/secrets/ path a service's environment names is a secret it is given.
    for name, service in deployment.services.items():
        mounted = {s.get("target") or s["source"] for s in service.get("secrets") or []}
        for value in (service.get("environment") or {}).values():
            for path in re.findall(r"/run/secrets/([\w.]+)", str(value)):
                assert path in mounted, (name, path)


def test_redis_wants_the_password_its_health_check_and_the_broker_url_give(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A real redis-server, started as the redis service starts it (from the generated
    redis_conf), refuses a client without the password; the service's health check and the
    celery_broker_url secret get in."""
    import redis

    from tests.redis_server import password_redis

    service = deployment.services["redis"]
    assert service["command"] == ["redis-server", "/run/secrets/redis_conf"]
    kind, check = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and " -a " not in check  # no password on a command line
    check = check.replace("$$", "$")  # `config` keeps Compose's escape; containers get a $
    with password_redis(tmp_path) as server:
        cli = [shutil.which("redis-cli") or "redis-cli", "-p", str(server.port)]
        anonymous = subprocess.run([*cli, "ping"], capture_output=True, text=True, timeout=30)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
        here = check.replace("/run/secrets/redis_conf", str(tmp_path / "redis_conf")).replace(
            "redis-cli ", " ".join(cli) + " "
        )
        assert here != check
        healthy = subprocess.run(["sh", "-c", here], capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy
        unhealthy = subprocess.run(
            ["sh", "-c", here.replace(str(tmp_path / "redis_conf"), "/dev/null")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert unhealthy.returncode != 0  # the check fails without the password
        client = redis.Redis.from_url(server.broker_url)
        assert client.ping() is True
        client.close()


def test_without_docker_env_compose_stops_with_a_message(tmp_path: Path) -> None:
    result = compose_config(tmp_path)
    assert result.returncode != 0
    assert MISSING_ENV_MESSAGE in result.stderr


def test_every_variable_the_deployment_needs_is_in_the_template_and_generated(
    deployment: Deployment,
) -> None:
    needed = referenced_names(COMPOSE.read_text())
    example = parse_env(ENV_EXAMPLE.read_text())
    assert needed == set(example) == set(deployment.env)
    # The template is the script's --example output; every value in it is a working default.
    assert ENV_EXAMPLE.read_text() == generate_env("--example").stdout
    assert all(example.values())


def test_the_airflow_services_run_as_airflow_uid_in_group_0(deployment: Deployment) -> None:
    uid = deployment.env["AIRFLOW_UID"]
    assert uid == str(os.getuid() or 50000)
    for name, service in deployment.airflow_services().items():
        # airflow-init starts as root to hand ./data over, then runs as AIRFLOW_UID.
        expected = "0:0" if name == "airflow-init" else f"{uid}:0"
        assert service["user"] == expected, name
        assert service["init"] is True, name
    assert deployment.services["airflow-init"]["environment"]["AIRFLOW_UID"] == uid


def test_keras_caches_the_weights_in_a_volume_at_keras_home(deployment: Deployment) -> None:
    dockerfile = DOCKERFILE.read_text()
    [keras_home] = re.findall(r"KERAS_HOME=(\S+)", dockerfile)
    # The image creates it, owned by the image's user and writable by group 0.
    assert re.search(rf"mkdir -p [^\n]*{re.escape(keras_home)}", dockerfile)
    assert re.search(rf"chown -R airflow:0 [^\n]*{re.escape(keras_home)}", dockerfile)
    assert re.search(rf"chmod -R g\+rwX [^\n]*{re.escape(keras_home)}", dockerfile)
    for name, service in deployment.airflow_services().items():
        if name == "airflow-init":
            continue
        assert f"keras-cache:{keras_home}:rw" in service["volumes"], name


def test_the_image_installs_airflow_init_under_its_component_name() -> None:
    dockerfile = DOCKERFILE.read_text()
    [command] = COMPONENTS["airflow-init"]
    assert f"COPY docker/airflow-init.sh /usr/local/bin/{command}" in dockerfile
    assert f"chmod 0755 /usr/local/bin/{command}" in dockerfile
    assert INIT_SCRIPT.stat().st_mode & stat.S_IXUSR
    assert "ENTRYPOINT" not in dockerfile  # Compose's commands are run as they are
    assert re.search(r"^USER 50000:0$", dockerfile, re.M)


def test_no_service_lets_everyone_in_as_admin(deployment: Deployment) -> None:
    for name, service in deployment.services.items():
        for key, value in (service.get("environment") or {}).items():
            if "SIMPLE_AUTH_MANAGER_ALL_ADMINS" in key:
                assert str(value).strip().lower() not in _TRUTHY, (name, key)
    assert "ALL_ADMINS" not in DOCKERFILE.read_text()
    # The API server has a named admin, whose password airflow-init writes into the file the
    # API server reads (the airflow-auth volume, mounted in those two only).
    api = deployment.services["airflow-apiserver"]["environment"]
    assert api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    passwords_file = api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    init = deployment.services["airflow-init"]
    assert init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == (
        passwords_file
    )
    auth_volume = f"airflow-auth:{Path(passwords_file).parent}:rw"
    holders = [n for n, s in deployment.services.items() if auth_volume in s.get("volumes", [])]
    assert sorted(holders) == ["airflow-apiserver", "airflow-init"]


def test_the_worker_reads_the_warehouse_connection_from_its_secret(
    deployment: Deployment,
) -> None:
    """The workers' secrets backend and its file give the tasks stpipe_warehouse as
    stpipe_writer, read by Airflow's own LocalFilesystemBackend."""
    from airflow.sdk import Connection
    from airflow.secrets.local_filesystem import LocalFilesystemBackend

    from pipeline.warehouse.airflow_connection import (
        warehouse_url_from_connection,
        warehouse_url_from_connections_file,
    )

    environment = deployment.services["airflow-worker"]["environment"]
    backend = environment["AIRFLOW__WORKERS__SECRETS_BACKEND"]
    assert backend == "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    kwargs = json.loads(environment["AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS"])
    assert kwargs == {"connections_file_path": "/run/secrets/airflow_connections.json"}
    # `stpipe` run by hand in a worker reads the same file (tests/e2e/test_cli_warehouse.py).
    assert environment["PIPELINE_WAREHOUSE_CONNECTIONS_FILE"] == kwargs["connections_file_path"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "airflow_connections.json")
        path.write_text(deployment.secrets["airflow_connections"])
        reader = LocalFilesystemBackend(connections_file_path=str(path))
        reader._set_connection_class(Connection)
        connection = reader.get_connection("stpipe_warehouse")
        by_hand = warehouse_url_from_connections_file(str(path))
    assert connection is not None
    assert by_hand == warehouse_url_from_connection(connection)  # the CLI's reading is Airflow's
    password = deployment.secrets["warehouse_writer_password"]
    assert warehouse_url_from_connection(connection) == (
        f"postgresql+psycopg://stpipe_writer:{password}@postgres:5432/warehouse"
    )
    assert "PIPELINE_WAREHOUSE_URL" not in environment


def test_postgres_init_holds_no_password() -> None:
    sql = (DOCKER / "postgres-init.sql").read_text()
    statements = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    assert "PASSWORD" not in statements.upper()
    assert "CREATE DATABASE warehouse" in statements


def test_scaling_workers_and_pool_slots_is_documented_together() -> None:
    text = COMPOSE.read_text()
    assert "--scale airflow-worker=N" in text and "STPIPE_CNN_POOL_SLOTS" in text
    template = ENV_EXAMPLE.read_text()
    assert "workers x STPIPE_WORKER_CONCURRENCY" in template


# docker/generate_env.py ---------------------------------------------------------------------


def test_generate_env_makes_fresh_valid_secrets(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first = generate_into(tmp_path / "a")
    _, second = generate_into(tmp_path / "b")
    randoms = [
        "postgres_password",
        "airflow_admin_password",
        "airflow_jwt_secret",
        "airflow_api_secret_key",
        "airflow_fernet_key",
        "warehouse_writer_password",
        "warehouse_analyst_password",
    ]
    for key in randoms:
        assert len(first[key]) >= 32 and first[key] != second[key], key
        assert re.fullmatch(r"[A-Za-z0-9_=-]+", first[key]), f"{key} would need URL quoting"
    assert len({first[key] for key in randoms}) == len(randoms), "two secrets are the same"
    assert len(base64.urlsafe_b64decode(first["airflow_fernet_key"])) == 32
    Fernet(first["airflow_fernet_key"].encode())  # what Airflow will build from it
    password = first["postgres_password"]
    assert first["airflow_db_url"] == (
        f"postgresql+psycopg2://airflow:{password}@postgres:5432/airflow"
    )
    assert first["warehouse_admin_url"] == (
        f"postgresql+psycopg://airflow:{password}@postgres:5432/warehouse"
    )
    redis_password = first["redis_conf"].removeprefix("requirepass ")
    assert first["redis_conf"] == f"requirepass {redis_password}"
    assert len(redis_password) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", redis_password)
    assert redis_password not in {first[key] for key in randoms}
    assert redis_password != second["redis_conf"].removeprefix("requirepass ")
    assert first["celery_broker_url"] == f"redis://:{redis_password}@redis:6379/0"
    # No trailing newline: Airflow's *_CMD options take `cat`'s output as it is.
    assert not any(value.endswith("\n") for value in first.values())


@pytest.mark.slow
def test_airflow_reads_the_secrets_through_its_cmd_options(tmp_path: Path) -> None:
    _, secrets = generate_into(tmp_path)
    check = (
        "from airflow.configuration import conf; import json; print(json.dumps(["
        "conf.get('core', 'fernet_key'), conf.get('api_auth', 'jwt_secret'), "
        "conf.get('database', 'sql_alchemy_conn'), conf.get('celery', 'broker_url')]))"
    )
    env = {
        **_CLEAN_ENV,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__FERNET_KEY_CMD": f"cat {tmp_path / 'secrets' / 'airflow_fernet_key'}",
        "AIRFLOW__API_AUTH__JWT_SECRET_CMD": f"cat {tmp_path / 'secrets' / 'airflow_jwt_secret'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"cat {tmp_path / 'secrets' / 'airflow_db_url'}",
        "AIRFLOW__CELERY__BROKER_URL_CMD": f"cat {tmp_path / 'secrets' / 'celery_broker_url'}",
    }
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        secrets["airflow_fernet_key"],
        secrets["airflow_jwt_secret"],
        secrets["airflow_db_url"],
        secrets["celery_broker_url"],
    ]


def test_generate_env_output_is_private_and_never_overwritten(tmp_path: Path) -> None:
    env, _ = generate_into(tmp_path)
    secrets_dir = tmp_path / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in secrets_dir.iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    written = {p.name: p.read_text() for p in secrets_dir.iterdir()}
    again = generate_env("--directory", str(tmp_path))
    assert again.returncode == 1 and "exist" in again.stderr
    assert {p.name: p.read_text() for p in secrets_dir.iterdir()} == written
    assert parse_env((tmp_path / ".env").read_text()) == env
    # Secrets without a .env (an interrupted run) are not overwritten either.
    (tmp_path / ".env").unlink()
    assert generate_env("--directory", str(tmp_path)).returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets"]  # no temporary left


def test_add_missing_upgrades_an_older_deployment_without_touching_its_secrets(
    tmp_path: Path,
) -> None:
    _, secrets = generate_into(tmp_path)
    secrets_dir = tmp_path / "secrets"
    # A deployment made before Redis had a password lacks its two secrets.
    redis_secrets = {"redis_conf", "celery_broker_url"}
    for name in redis_secrets:
        (secrets_dir / name).unlink()
    added = generate_env("--directory", str(tmp_path), "--add-missing")
    assert added.returncode == 0, added.stderr
    assert "added celery_broker_url, redis_conf" in added.stderr
    now = {p.name: p.read_text() for p in secrets_dir.iterdir()}
    assert now.keys() == secrets.keys()
    assert {k: v for k, v in now.items() if k not in redis_secrets} == {
        k: v for k, v in secrets.items() if k not in redis_secrets
    }
    password = now["redis_conf"].removeprefix("requirepass ")
    assert password != secrets["redis_conf"].removeprefix("requirepass ")  # freshly made
    assert now["celery_broker_url"] == f"redis://:{password}@redis:6379/0"  # and agreeing
    assert {stat.S_IMODE(p.stat().st_mode) for p in secrets_dir.iterdir()} == {0o644}
    again = generate_env("--directory", str(tmp_path), "--add-missing")
    assert again.returncode == 0 and "every secret already" in again.stderr
    assert {p.name: p.read_text() for p in secrets_dir.iterdir()} == now
    # Half of a pair cannot be made to agree with the other half: refused, nothing written.
    (secrets_dir / "celery_broker_url").unlink()
    refused = generate_env("--directory", str(tmp_path), "--add-missing")
    assert refused.returncode == 1 and "redis_conf" in refused.stderr, refused.stderr
    assert not (secrets_dir / "celery_broker_url").exists()
    assert generate_env("--directory", str(tmp_path / "none"), "--add-missing").returncode == 1


def test_env_and_secrets_are_git_ignored_and_kept_out_of_the_image() -> None:
    for path in ("docker/.env", "docker/secrets/airflow_db_url"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, timeout=30)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "docker/.env", "docker/secrets"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert tracked.stdout == ""
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "docker/.env" in dockerignore and "docker/secrets" in dockerignore


# docker/airflow-init.sh ---------------------------------------------------------------------


def run_init(
    env: Mapping[str, str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # The script runs `airflow`, `stpipe` and `python3`: this environment's.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        ["bash", str(INIT_SCRIPT)],
        env={**_CLEAN_ENV, "PATH": path, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_init_script_documents_every_variable_it_reads() -> None:
    script = INIT_SCRIPT.read_text()
    header = script.split("set -euo pipefail", 1)[0]
    read = {n for n in referenced_names(script) if n.isupper()} | set(
        re.search(r"for name in ([A-Z_ \\\n]+); do", script)[1].split()  # type: ignore[index]
    ) - {"\\"}
    assert read - {"BASH_SOURCE"}, "no variables found"
    for name in sorted(read - {"BASH_SOURCE"}):
        assert name in header, f"{name} is read but not documented in the header"
    # The Compose service gives it what it requires.
    init = raw_compose()["services"]["airflow-init"]["environment"]
    for name in ("STPIPE_CNN_POOL_SLOTS", "AIRFLOW_ADMIN_USER", "AIRFLOW_UID"):
        assert name in init, name
    for name in (
        "AIRFLOW_ADMIN_PASSWORD",
        "PIPELINE_WAREHOUSE_ADMIN_URL",
        "PIPELINE_WAREHOUSE_WRITER_PASSWORD",
        "PIPELINE_WAREHOUSE_ANALYST_PASSWORD",
    ):
        assert init[f"{name}_FILE"].startswith("/run/secrets/"), name


_SLOTS = {"STPIPE_CNN_POOL_SLOTS": "2"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "STPIPE_CNN_POOL_SLOTS='' must be an integer >= 1"),
        ({"STPIPE_CNN_POOL_SLOTS": "0"}, "must be an integer >= 1"),
        ({**_SLOTS, "AIRFLOW_ADMIN_USER": "admin"}, "set both AIRFLOW_ADMIN_USER and"),
        ({**_SLOTS, "AIRFLOW_ADMIN_PASSWORD": "x"}, "set both AIRFLOW_ADMIN_USER and"),
        (
            {**_SLOTS, "AIRFLOW_ADMIN_USER": "admin:op,viewer", "AIRFLOW_ADMIN_PASSWORD": "x"},
            "AIRFLOW_ADMIN_USER may hold only",
        ),
        (
            {**_SLOTS, "AIRFLOW_ADMIN_PASSWORD": "x", "AIRFLOW_ADMIN_PASSWORD_FILE": "/dev/null"},
            "set AIRFLOW_ADMIN_PASSWORD or AIRFLOW_ADMIN_PASSWORD_FILE, not both",
        ),
        ({**_SLOTS, "AIRFLOW_ADMIN_PASSWORD_FILE": "/nonexistent"}, "is not a readable file"),
    ],
)
def test_the_init_script_refuses_bad_settings_before_touching_anything(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run_init({"AIRFLOW_HOME": str(tmp_path / "home"), **env})
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "home").exists()


#: Every character JSON or a shell could get wrong.
_AWKWARD_PASSWORD = "p\"a\\s s'$w{}%ü"


def _pool_slots(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT pool, slots FROM slot_pool").fetchall())


#: The uid the root-only tests hand the deployment to (no such user exists: Compose's case).
_DEPLOYMENT_UID = 54321


def _runs_python_as(uid: int) -> bool:
    """Whether a shell running as ``uid`` can start this test's Python (not when it lives under
    a private home such as /root)."""
    probe = ["setpriv", f"--reuid={uid}", "--regid=0", "--clear-groups", "--", "bash", "-c"]
    result = subprocess.run([*probe, '"$0" -c ""', sys.executable], capture_output=True, timeout=60)
    return result.returncode == 0


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A folder another uid can reach (pytest's tmp_path is private to this user)."""
    root = Path(tempfile.mkdtemp(prefix="stpipe-init-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@pytest.mark.skipif(os.getuid() != 0, reason="hands folders to another uid: needs root")
def test_as_root_the_init_script_hands_the_folders_to_airflow_uid_first(
    shared_root: Path,
) -> None:
    data, auth = shared_root / "data", shared_root / "auth"
    env = {
        "AIRFLOW_HOME": str(shared_root / "home"),
        "AIRFLOW_UID": str(_DEPLOYMENT_UID),
        "STPIPE_CNN_POOL_SLOTS": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(auth / "passwords.json"),
        "PIPELINE_DATA_DIR": str(data),
        # No airflow on PATH: the run stops at its first Airflow command, as AIRFLOW_UID.
        "PATH": "/usr/bin:/bin",
        "STPIPE_DB_WAIT_SECONDS": "0",
    }
    result = run_init(env)
    assert f"belong to {_DEPLOYMENT_UID}:0; going on as that user" in result.stdout
    assert result.returncode == 1 and "airflow: command not found" in result.stderr
    for folder in (data, data / "landing", auth):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (_DEPLOYMENT_UID, 0), folder
        assert folder.stat().st_mode & 0o070 == 0o070, folder  # group 0 may write


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_init_script_prepares_a_deployment_and_runs_again(shared_root: Path) -> None:
    """The whole script on a SQLite metadata DB, as the fleet test runs it, then again with
    other settings: the pool follows, the admin's password is replaced, other users stay. As
    root (where this Python can run as another user), it runs as Compose runs it: handing the
    folders to AIRFLOW_UID and going on as that user."""
    as_root = os.getuid() == 0 and _runs_python_as(_DEPLOYMENT_UID)
    uid = _DEPLOYMENT_UID if as_root else os.getuid()
    home, data = shared_root / "home", shared_root / "data"
    home.mkdir()
    if as_root:
        os.chown(home, uid, 0)
    passwords_file = home / "auth" / "passwords.json"
    secret = shared_root / "admin_password"
    secret.write_text(_AWKWARD_PASSWORD)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "STPIPE_CNN_POOL_SLOTS": "3",
        "AIRFLOW_ADMIN_USER": "ops",
        "AIRFLOW_ADMIN_PASSWORD_FILE": str(secret),
        "PIPELINE_DATA_DIR": str(data),
        "HOME": str(home),
    }
    if as_root:
        env["AIRFLOW_UID"] = str(uid)
    first = run_init(env, timeout=300, cwd=shared_root)
    assert first.returncode == 0, first.stderr
    assert "no PIPELINE_WAREHOUSE_ADMIN_URL; warehouse roles left as they are" in first.stdout
    assert first.stdout.rstrip().endswith("stpipe-airflow-init: ready")
    assert _pool_slots(home / "airflow.db")["cnn"] == 3
    assert json.loads(passwords_file.read_text()) == {"ops": _AWKWARD_PASSWORD}
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
    for path in (data, data / "landing", passwords_file, home / "airflow.db"):
        assert path.stat().st_uid == uid, path
        assert path.stat().st_gid == 0 or not as_root, path
    assert sorted(p.name for p in passwords_file.parent.iterdir()) == ["passwords.json"]

    # Again (the next `up`), with other settings.
    passwords = json.loads(passwords_file.read_text())
    passwords_file.write_text(json.dumps({**passwords, "viewer": "kept"}))
    env.update(STPIPE_CNN_POOL_SLOTS="5", AIRFLOW_ADMIN_PASSWORD_FILE="")
    env["AIRFLOW_ADMIN_PASSWORD"] = "new password"
    again = run_init(env, timeout=300, cwd=shared_root)
    assert again.returncode == 0, again.stderr
    assert _pool_slots(home / "airflow.db")["cnn"] == 5
    assert json.loads(passwords_file.read_text()) == {"ops": "new password", "viewer": "kept"}


@pytest.mark.slow
def test_simple_auth_manager_keeps_the_password_airflow_init_wrote(tmp_path: Path) -> None:
    passwords_file = tmp_path / "passwords.json"
    passwords_file.write_text(json.dumps({"admin": _AWKWARD_PASSWORD}))
    passwords_file.chmod(0o600)
    # Airflow's own SimpleAuthManager starts with that file (7 s to import the API server).
    check = (
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import "
        "SimpleAuthManager as M; M().init(); import json; print(json.dumps(M.get_passwords()))"
    )
    started = subprocess.run(
        [sys.executable, "-c", check],
        env={
            **os.environ,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout.splitlines()[-1])["admin"] == _AWKWARD_PASSWORD
