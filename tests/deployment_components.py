"""The Airflow components of a deployment, in one place: the Compose service that runs each
one and the command it runs.

The fleet test (tests/e2e/test_fleet.py) starts exactly these commands as processes, adding
only the flags in :data:`FLEET_ONLY_FLAGS` (ports and hostnames that containers get from
Docker); tests/unit/test_deployment.py checks that docker/docker-compose.yml runs the same ones.
"""

from __future__ import annotations

#: Compose service -> the command its container runs (after the image's entrypoint).
#: ``stpipe-airflow-init`` is docker/airflow-init.sh, installed in the image under that name.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "airflow-init": ("stpipe-airflow-init",),
    "airflow-apiserver": ("airflow", "api-server"),
    "airflow-scheduler": ("airflow", "scheduler"),
    "airflow-dag-processor": ("airflow", "dag-processor"),
    "airflow-triggerer": ("airflow", "triggerer"),
    "airflow-worker": ("airflow", "celery", "worker"),
}

#: Flags the fleet test adds because its components share one host (a container has its own
#: port space and hostname).
FLEET_ONLY_FLAGS = frozenset({"--port", "--celery-hostname"})
