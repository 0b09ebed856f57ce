"""The daily report on real data, opened in a real headless browser (Debian's ``chromium``,
which ``.ci/run`` installs): the screenshot is not blank and the page logs no console message
(a broken image, a blocked request or script would log one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.stages import run_report, run_score, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.conftest import REPO, pipeline_env
from tests.e2e.test_object_store import s3_endpoint  # noqa: F401 (a fixture)
from tests.feature_factory import temporal_corpus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BROWSER_SECONDS = 90


@dataclass(frozen=True)
class Rendered:
    """What chromium made of a page: the screenshot's pixels (rows, cols, RGB(A) 0-1), its
    console messages and the DOM after the load event."""

    pixels: np.ndarray[Any, Any]
    console: list[str]
    dom: str


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (.ci/run installs it)"
        )
    return found


def render_in_chromium(page: Path, tmp_path: Path) -> Rendered:
    """Open ``page`` in headless chromium twice: a 1280 x 2000 screenshot with console logging,
    then the DOM as it stands after the page's scripts ran."""
    import matplotlib.image

    browser = chromium()
    common = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    shot = tmp_path / "screenshot.png"
    logged = subprocess.run(
        [
            *common,
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_SECONDS,
        check=False,
    )
    assert logged.returncode == 0 and shot.exists(), logged.stderr[-3000:]
    dumped = subprocess.run(
        [*common, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=BROWSER_SECONDS,
        check=True,
    )
    console = [line for line in logged.stderr.splitlines() if ":CONSOLE" in line]
    return Rendered(matplotlib.image.imread(shot), console, dumped.stdout)


def assert_renders_cleanly(page: Path, tmp_path: Path, images: int) -> Rendered:
    rendered = render_in_chromium(page, tmp_path)
    assert rendered.console == [], "\n".join(rendered.console)
    # The page's own script counts the images that decoded.
    assert f'data-images-checked="{images}"' in rendered.dom
    rgb = rendered.pixels[..., :3]
    assert rgb.shape[:2] == (2000, 1280)
    assert float(rgb.std()) > 0.05, "the screenshot is (nearly) one colour"
    colours = np.unique((rgb.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours in the screenshot"
    return rendered


@pytest.fixture
def scored(settings: Settings) -> Settings:
    """A warehouse with a trained production model and its predictions (cached features, no
    CNN): 40 labelled clips and 10 unlabelled ones, scored once."""
    store = FeatureStore.from_settings(settings)
    with Warehouse.connect(settings.warehouse) as warehouse:
        temporal_corpus(warehouse, store, per_class=20, unlabelled=10)
        clip_id = next(c.clip_id for c in warehouse.clips(status="ok"))
        warehouse.quarantine_clip(clip_id, "<script>alert('reason')</script> broken header")
    run_train(settings, TrainParams(epochs=3, batch_size=8, seed=0), promote=True)
    run_score(settings, run_id="nightly-<b>1</b>", logical_date=datetime.now(UTC))
    return settings


def test_report_of_a_scored_warehouse_renders_in_chromium(scored: Settings, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    written = Path(run_report(scored))
    reports = Path(scored.data_dir, "reports")
    assert written == reports / f"{today.isoformat()}.html"
    assert (reports / "latest.html").read_bytes() == written.read_bytes()
    page = written.read_text()
    assert "No data yet." not in page
    assert "&lt;script&gt;alert(&#x27;reason&#x27;)&lt;/script&gt;" in page
    assert "nightly-&lt;b&gt;1&lt;/b&gt;" in page
    with Warehouse.connect(scored.warehouse) as warehouse:
        production = warehouse.production_model()
    assert production is not None and production.model_version in page
    # a plot per section with data, and the model card's confusion matrix and curves
    assert_renders_cleanly(written, tmp_path, images=page.count("<img "))
    assert page.count("<img ") >= 5

    # A backfill of an earlier day writes its own file and leaves latest.html alone.
    earlier = Path(run_report(scored, date=date(2026, 1, 2)))
    assert earlier.name == "2026-01-02.html"
    assert (reports / "latest.html").read_bytes() == written.read_bytes()


def test_an_empty_warehouse_report_renders_in_chromium(settings: Settings, tmp_path: Path) -> None:
    written = Path(run_report(settings, date=date(2026, 3, 1), out=str(tmp_path / "out")))
    assert written == tmp_path / "out" / "2026-03-01.html"
    page = written.read_text()
    assert "No data yet." in page
    assert_renders_cleanly(written, tmp_path, images=0)


def test_a_page_of_hostile_strings_renders_in_chromium_without_running_any(
    tmp_path: Path,
) -> None:
    from pipeline.reporting.html import render_daily_report
    from tests.unit.test_report import hostile_report

    page = tmp_path / "hostile.html"
    page.write_text(render_daily_report(hostile_report()))
    rendered = assert_renders_cleanly(page, tmp_path, images=6)
    assert "alert" not in "".join(rendered.console)


def test_stpipe_report_writes_the_day_and_latest(settings: Settings, tmp_path: Path) -> None:
    from tests.processes import stpipe

    out = tmp_path / "reports"
    result = stpipe(settings, "report", "--date", "2026-02-03", "--out", str(out))
    assert "2026-02-03.html" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["2026-02-03.html", "latest.html"]


def test_nightly_scoring_writes_the_report_of_its_logical_date(
    scored: Settings, monkeypatch: pytest.MonkeyPatch, airflow_db: str
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    for key, value in pipeline_env(scored).items():
        monkeypatch.setenv(key, value)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("nightly_scoring")
    logical = datetime(2026, 4, 5, 2, 0, tzinfo=UTC)
    dag_run = dag.test(logical_date=logical)
    assert dag_run.state == "success"
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["score_new_clips"] == "success" and states["write_daily_report"] == "success"
    report = Path(scored.data_dir, "reports", "2026-04-05.html")
    assert report.exists()
    assert "stpipe daily report 2026-04-05" in report.read_text()


def test_stpipe_report_writes_into_an_s3_data_root(
    tmp_path: Path,
    s3_endpoint: dict[str, str],  # noqa: F811 (the fixture imported above)
) -> None:
    import s3fs

    bucket = f"stpipe-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_endpoint["AWS_ENDPOINT_URL"]}, key="test", secret="test"
    )
    fs.mkdir(bucket)
    env = {
        **os.environ,
        **s3_endpoint,
        "PIPELINE_DATA_DIR": f"s3://{bucket}/data",
        "PIPELINE_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
    }
    for day in ("2026-03-01", "2026-02-01"):  # the second is a backfill
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "report", "--date", day],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    keys = sorted(k.rsplit("/", 1)[-1] for k in fs.find(f"{bucket}/data/reports"))
    assert keys == ["2026-02-01.html", "2026-03-01.html", "latest.html"]
    latest = fs.cat(f"{bucket}/data/reports/latest.html").decode()
    assert "stpipe daily report 2026-03-01" in latest and "No data yet." in latest
