from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def dag_bag(airflow_db: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))
