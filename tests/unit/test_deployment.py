"""The Compose deployment is secure by default, checked statically (no Docker engine needed):
no password-less admin, nothing published beyond 127.0.0.1, no secret written in the files,
every secret generated into a git-ignored docker/.env, and the entrypoint's passwords file."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
GENERATE_ENV = DOCKER / "generate_env.py"
ENV_EXAMPLE = DOCKER / ".env.example"

#: Compose's interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default},
#: ${VAR:?error}, ${VAR?error}, ${VAR:+alternative}, ${VAR+alternative}.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|JWT|KEY")
_URL_CREDENTIALS = re.compile(r"://(?P<user>[^:/@\s]+):(?P<password>[^@\s]*)@")
#: What Airflow's conf.getboolean reads as true.
_TRUTHY = {"t", "true", "1", "yes", "y", "on"}


class MissingVariableError(Exception):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` as ``docker compose`` would resolve it with the variables ``env``."""

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = env.get(name)
        # With a colon, an empty value counts as unset.
        present = bool(value) if op.startswith(":") else value is not None
        if op.endswith("-"):
            return (value or "") if present else arg
        if op.endswith("?"):
            if not present:
                raise MissingVariableError(f"{name}: {arg}")
            return value or ""
        if op.endswith("+"):
            return arg if present else ""
        return value or ""

    return _REFERENCE.sub(resolve, text)


def referenced_names(text: str) -> set[str]:
    return {m["name"] for m in _REFERENCE.finditer(text) if m["name"]}


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())  # resolves the <<: merge keys
    assert isinstance(document, dict) and document["services"]
    return document


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose allows a mapping or a KEY=VALUE list)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def all_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_strings(item)


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


def generated_env() -> dict[str, str]:
    result = generate_env()
    assert result.returncode == 0, result.stderr
    return parse_env(result.stdout)


def run_entrypoint(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PIPELINE_"))}
    # The script runs `python3`: this interpreter's, as /opt/venv/bin comes first in the image.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *command],
        env={**base, "PATH": path, "AIRFLOW_HOME": str(tmp_path / "airflow-home"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_service_lets_everyone_in_as_admin() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for key, value in service_environment(service).items():
            if "SIMPLE_AUTH_MANAGER_ALL_ADMINS" in key:
                for env in ({}, generated_env()):
                    assert interpolate(value, env).strip().lower() not in _TRUTHY, (name, key)
    assert "ALL_ADMINS" not in (DOCKER / "Dockerfile").read_text()
    # The API server has a named admin whose password the entrypoint writes.
    api = service_environment(services["airflow-apiserver"])
    users = interpolate(api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"], generated_env())
    assert users == "admin:admin"


def test_published_ports_bind_to_localhost_by_default() -> None:
    published = 0
    for name, service in compose()["services"].items():
        for port in service.get("ports") or []:
            published += 1
            for env in ({}, generated_env(), parse_env(ENV_EXAMPLE.read_text())):
                if isinstance(port, Mapping):  # long syntax
                    host_ip = interpolate(str(port.get("host_ip", "")), env)
                else:
                    host_ip = interpolate(str(port), env).rsplit(":", 2)[0]
                    assert str(port).count(":") >= 2, f"{name}: {port} binds every interface"
                assert host_ip == "127.0.0.1", f"{name}: {port} binds {host_ip!r}"
    assert published, "the API server should be published (on 127.0.0.1)"
    # The operator can choose another address.
    [api_port] = compose()["services"]["airflow-apiserver"]["ports"]
    assert interpolate(api_port, {"AIRFLOW_BIND_ADDRESS": "10.0.0.5"}).startswith("10.0.0.5:")


def test_no_secret_is_written_in_the_compose_file() -> None:
    document = compose()
    checked = 0
    for name, service in document["services"].items():
        for key, value in service_environment(service).items():
            if _SECRET_NAME.search(key):
                checked += 1
                # The whole value is one ${VAR:?message}: required, never a default.
                match = _REFERENCE.fullmatch(value)
                assert match and match["op"] == ":?" and match["arg"], f"{name}: {key}={value}"
    for text in all_strings(document):
        for credentials in _URL_CREDENTIALS.finditer(text):
            match = _REFERENCE.fullmatch(credentials["password"])
            assert match and match["op"] == ":?", f"literal password in {text}"
            checked += 1
    assert checked >= 8  # JWT, Fernet, API key, 3 passwords; 4 URLs with passwords
    # Without docker/.env, `docker compose` stops with a message instead of starting.
    with pytest.raises(MissingVariableError, match="POSTGRES_PASSWORD"):
        interpolate(service_environment(document["services"]["postgres"])["POSTGRES_PASSWORD"], {})


def test_postgres_init_holds_no_password() -> None:
    sql = (DOCKER / "postgres-init.sql").read_text()
    statements = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    assert "PASSWORD" not in statements.upper()
    assert "CREATE DATABASE warehouse" in statements


def test_every_variable_the_deployment_needs_is_in_the_template_and_generated() -> None:
    needed = referenced_names(COMPOSE.read_text())
    example = parse_env(ENV_EXAMPLE.read_text())
    generated = generated_env()
    assert needed - set(example) == set(), "missing from docker/.env.example"
    assert needed - set(generated) == set(), "not made by docker/generate_env.py"
    assert set(example) - needed == set() and set(generated) == set(example), "unused variables"
    # The template is the script's --example output, and holds no secret to copy.
    assert ENV_EXAMPLE.read_text() == generate_env("--example").stdout
    assert not any(value for key, value in example.items() if _SECRET_NAME.search(key))
    for key, value in example.items():
        if not value:
            assert re.search(rf"\${{{key}:\?", COMPOSE.read_text()), f"empty {key} would start"


def test_api_server_gets_the_login_the_entrypoint_writes() -> None:
    script = ENTRYPOINT.read_text()
    # Environment variables (upper case) but Airflow's own settings (AIRFLOW__*) and
    # AIRFLOW_HOME, which the image sets.
    needed = {n for n in referenced_names(script) if n.isupper() and not n.startswith("AIRFLOW__")}
    needed -= {"AIRFLOW_HOME"}
    assert needed == {"AIRFLOW_ADMIN_USER", "AIRFLOW_ADMIN_PASSWORD"}
    api = service_environment(compose()["services"]["airflow-apiserver"])
    for name in needed:
        assert referenced_names(api[name]) == {name}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "COPY docker/entrypoint.sh /usr/local/bin/stpipe-entrypoint" in dockerfile
    assert 'ENTRYPOINT ["/usr/local/bin/stpipe-entrypoint"]' in dockerfile
    # Only the API server is given the admin password.
    for name, service in compose()["services"].items():
        if name != "airflow-apiserver":
            assert "AIRFLOW_ADMIN_PASSWORD" not in service_environment(service), name


def test_generate_env_makes_fresh_valid_secrets() -> None:
    from cryptography.fernet import Fernet

    first, second = generated_env(), generated_env()
    secrets = [key for key in first if _SECRET_NAME.search(key)]
    assert len(secrets) == 7
    for key in secrets:
        assert len(first[key]) >= 32 and first[key] != second[key], key
        assert re.fullmatch(r"[A-Za-z0-9_=-]+", first[key]), f"{key} would need URL quoting"
    assert len({first[key] for key in secrets}) == len(secrets), "two secrets are the same"
    assert len(base64.urlsafe_b64decode(first["AIRFLOW_FERNET_KEY"])) == 32
    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # what Airflow will build from it
    assert first["AIRFLOW_BIND_ADDRESS"] == "127.0.0.1"


def test_generate_env_output_is_private_and_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    assert generate_env("--output", str(target)).returncode == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    written = target.read_text()
    assert parse_env(written)["AIRFLOW_ADMIN_PASSWORD"]
    again = generate_env("--output", str(target))
    assert again.returncode == 1 and "exists" in again.stderr
    assert target.read_text() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]  # no temporary file left


def test_env_file_is_git_ignored_and_not_tracked() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/.env"], cwd=REPO, timeout=30, check=False
    )
    assert ignored.returncode == 0, "docker/.env is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "docker/.env"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert tracked.stdout == ""
    assert "docker/.env" in (REPO / ".dockerignore").read_text().splitlines()


def _write_passwords_file(tmp_path: Path, password: str) -> Path:
    """Run the entrypoint with ``admin``/``password`` over a file that already holds users."""
    passwords_file = tmp_path / "auth" / "passwords.json"
    passwords_file.parent.mkdir()
    passwords_file.write_text(json.dumps({"viewer": "kept", "admin": "old"}))
    result = run_entrypoint(
        tmp_path,
        "bash",
        "-c",
        'test -z "${AIRFLOW_ADMIN_PASSWORD:-}" && echo command ran',
        AIRFLOW_ADMIN_USER="admin",
        AIRFLOW_ADMIN_PASSWORD=password,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "command ran\n"  # and without the password in its environment
    return passwords_file


#: Every character JSON or a shell could get wrong.
_AWKWARD_PASSWORD = "p\"a\\s s'$w{}%ü"


def test_entrypoint_writes_the_admin_password_privately(tmp_path: Path) -> None:
    passwords_file = _write_passwords_file(tmp_path, _AWKWARD_PASSWORD)
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
    assert json.loads(passwords_file.read_text()) == {"viewer": "kept", "admin": _AWKWARD_PASSWORD}
    assert sorted(p.name for p in passwords_file.parent.iterdir()) == ["passwords.json"]


@pytest.mark.slow
def test_simple_auth_manager_keeps_the_password_the_entrypoint_wrote(tmp_path: Path) -> None:
    passwords_file = _write_passwords_file(tmp_path, _AWKWARD_PASSWORD)
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


def test_entrypoint_writes_to_airflow_home_by_default(tmp_path: Path) -> None:
    result = run_entrypoint(
        tmp_path, "true", AIRFLOW_ADMIN_USER="ops", AIRFLOW_ADMIN_PASSWORD="secret"
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "airflow-home" / "simple_auth_manager_passwords.json.generated"
    assert json.loads(written.read_text()) == {"ops": "secret"}
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_entrypoint_without_a_login_only_runs_the_command(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, "echo", "hello")
    assert result.returncode == 0 and result.stdout == "hello\n", result.stderr
    assert not (tmp_path / "airflow-home").exists()


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("admin", "", "set both AIRFLOW_ADMIN_USER and AIRFLOW_ADMIN_PASSWORD"),
        ("", "secret", "set both AIRFLOW_ADMIN_USER and AIRFLOW_ADMIN_PASSWORD"),
        ("admin:op,viewer", "secret", "AIRFLOW_ADMIN_USER may hold only"),
    ],
)
def test_entrypoint_refuses_an_incomplete_login(
    tmp_path: Path, user: str, password: str, message: str
) -> None:
    result = run_entrypoint(
        tmp_path, "echo", "ran", AIRFLOW_ADMIN_USER=user, AIRFLOW_ADMIN_PASSWORD=password
    )
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
