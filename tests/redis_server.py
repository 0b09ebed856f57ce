"""A private, password-protected ``redis-server`` configured as docker/docker-compose.yml
configures its Redis: from the ``redis_conf`` and ``celery_broker_url`` secrets that
docker/generate_env.py writes (the broker URL pointed at this server instead of ``redis:6379``)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests.airflow_deployment import free_port
from tests.conftest import REPO


def generate_env_module() -> ModuleType:
    """docker/generate_env.py, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "generate_env", REPO / "docker" / "generate_env.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class RedisServer:
    port: int
    password: str
    #: The ``celery_broker_url`` secret's file, as Airflow reads it (``BROKER_URL_CMD``).
    broker_url_file: Path

    @property
    def broker_url(self) -> str:
        return self.broker_url_file.read_text()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server is not installed: `apt-get install -y redis-server` (.ci/run does)"
        )
    return found


@contextmanager
def password_redis(folder: Path) -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free 127.0.0.1 port with freshly generated secrets, wait
    until it answers an authenticated PING, and stop it on exit."""
    import redis

    secrets = generate_env_module().render_secrets()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "redis_conf").write_text(secrets["redis_conf"])
    url = secrets["celery_broker_url"].replace("@redis:6379/", f"@127.0.0.1:{port}/")
    assert url != secrets["celery_broker_url"], "the broker URL no longer names redis:6379"
    (folder / "celery_broker_url").write_text(url)
    password = secrets["redis_conf"].removeprefix("requirepass ")
    config = folder / "redis.conf"
    config.write_text(
        f"include {folder / 'redis_conf'}\n"
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {folder}\n'
    )
    log = (folder / "redis.log").open("wb")
    process = subprocess.Popen(
        [redis_server_binary(), str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(folder / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        client.close()
        yield RedisServer(port, password, folder / "celery_broker_url")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
