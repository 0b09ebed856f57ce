"""Work claims and version reservations: what keeps runs at the same time from doing the same
work twice or taking the same name, on SQLite and PostgreSQL, with real concurrent processes."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

from pipeline.config import Settings
from pipeline.extract import extract_features
from pipeline.features.store import FeatureStore
from pipeline.media.sequences import SequenceSpec
from pipeline.stages import run_ingest
from pipeline.warehouse.claims import WarehouseClaims, owner_is_dead, process_owner
from pipeline.warehouse.database import Warehouse, as_datetime, utc_now
from tests.media_factory import tone_file


def _reserve_many(job: tuple[str, int]) -> list[str]:
    url, worker = job
    with Warehouse.connect(url, migrate=False) as wh:
        return [wh.reserve_model_version(f"fp-{worker}-{k}") for k in range(5)]


def test_versions_reserved_by_processes_at_once_are_all_distinct(
    warehouse_url: str, warehouse: Warehouse
) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_reserve_many, [(warehouse_url, w) for w in range(8)], chunksize=1)
    versions = [v for worker in results for v in worker]
    assert len(versions) == len(set(versions)) == 40
    assert sorted(versions) == [f"v{n:04d}" for n in range(1, 41)]
    # A training killed before registering gets its reservation back when run again...
    assert warehouse.reserve_model_version("fp-3-2") == results[3][2]
    # ...but once registered, the same fingerprint trained again is a new version.
    warehouse.register_model(
        model_version=results[3][2],
        model_uri="/m",
        settings_hash="h",
        fingerprint="fp-3-2",
        class_names=["a", "b"],
        metrics={},
        streams=["video"],
    )
    assert warehouse.reserve_model_version("fp-3-2") == "v0041"


def test_a_live_owners_claims_are_not_taken(warehouse: Warehouse) -> None:
    with WarehouseClaims(warehouse, "features/h", lease_seconds=60) as first:
        assert first.claim(["a", "b"]) == {"a", "b"}
        second = WarehouseClaims(warehouse, "features/h", lease_seconds=60)
        second.owner = f"{socket.gethostname()}:other:{os.getpid()}:1"  # another process
        assert second.claim(["a", "b", "c"]) == {"c"}
        first.release(["a"])
        assert second.claim(["a", "b"]) == {"a"}
    # Closing releases what the first still held.
    assert second.claim(["b"]) == {"b"}


def test_claims_of_a_dead_process_on_this_machine_are_taken_over_at_once(
    warehouse: Warehouse,
) -> None:
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    me = process_owner()
    dead = me.rsplit(":", 2)[0] + f":{process.pid}:1"
    assert owner_is_dead(dead) and not owner_is_dead(me)
    warehouse.claim_work(["features/h/x"], dead, stale=lambda owner, when: False)
    claims = WarehouseClaims(warehouse, "features/h", lease_seconds=3600)
    assert claims.claim(["x"]) == {"x"}


def test_claims_elsewhere_lapse_with_their_lease_and_heartbeats_renew_them(
    warehouse: Warehouse,
) -> None:
    elsewhere = "another-host:boot:123:456"
    assert not owner_is_dead(elsewhere)  # not known: only the lease can free it
    warehouse.claim_work(["features/h/x"], elsewhere, stale=lambda owner, when: False)
    claims = WarehouseClaims(warehouse, "features/h", lease_seconds=1.0)
    assert claims.claim(["x"]) == set()
    time.sleep(1.2)
    assert claims.claim(["x"]) == {"x"}
    with claims:  # its heartbeat keeps the claim fresh well past one lease
        time.sleep(1.6)
        [row] = warehouse.query("SELECT heartbeat_at FROM work_claims")
        assert utc_now() - as_datetime(row["heartbeat_at"]) < timedelta(seconds=1)
    assert warehouse.query("SELECT * FROM work_claims") == []


def test_extraction_waits_for_clips_another_run_holds_then_takes_them_over(
    make_settings: object, tmp_path: Path
) -> None:
    settings: Settings = make_settings()  # type: ignore[operator]
    for i in range(3):
        tone_file(tmp_path / "in" / f"t{i}.wav", seconds=0.5, freq=300 + 100 * i)
    run_ingest(settings, str(tmp_path / "in"))
    store = FeatureStore.from_settings(settings)
    with Warehouse.connect(settings.warehouse) as wh:
        clips = wh.clips()
        # Another run (on another machine) holds two clips and then stops heart-beating.
        held = [c.clip_id for c in clips[:2]]
        wh.claim_work(
            [f"features/{store.settings_hash}/{c}" for c in held],
            "another-host:boot:1:1",
            stale=lambda owner, when: False,
        )
        from pipeline.features.cnn import (
            build_embedder,  # TensorFlow: not in the spawned workers above
        )

        started = time.monotonic()
        with WarehouseClaims(wh, f"features/{store.settings_hash}", lease_seconds=1.5) as claims:
            summary = extract_features(
                clips,
                store,
                SequenceSpec.from_settings(settings),
                lambda: build_embedder("none", 32, "float32", 16, 1),
                quarantine=lambda clip_id, reason: None,
                claims=claims,
                poll_seconds=0.2,
            )
        waited = time.monotonic() - started
        assert wh.query("SELECT * FROM work_claims") == []
    assert summary.extracted == 3 and summary.by_other_runs == 0
    assert waited >= 1.5  # the held clips were taken over only once their lease ran out
    assert store.clip_ids() == {c.clip_id for c in clips}
