"""The seed's end-to-end model trains from decoded media alone (no feature cache), registers,
and scores; its standardisation statistics come from a bounded, seeded sample of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.media.sequences import SequenceSpec
from pipeline.registry.artifacts import read_metadata
from pipeline.stages import run_extract, run_ingest, run_score, run_train, run_validate
from pipeline.training.params import TrainParams
from pipeline.training.statistics import feature_statistics, sampled_frame_statistics
from pipeline.warehouse.database import ClipRecord, Warehouse
from tests.media_factory import colour_video, tone_file

pytestmark = pytest.mark.slow


def test_end_to_end_model_trains_from_media_alone_and_scores(
    tmp_path: Path, settings: Settings
) -> None:
    for i in range(8):
        shade = 250 - 8 * i
        colour_video(tmp_path / "in" / "red_blue" / f"{i}.mp4", [(shade, 0, 0), (0, 0, shade)])
        colour_video(tmp_path / "in" / "blue_red" / f"{i}.mp4", [(0, 0, shade), (shade, 0, 0)])
    run_ingest(settings, str(tmp_path / "in"), labelled=True)  # and no `stpipe extract`
    # the DAG's validate_training_data task checks the same planned inventory
    report = run_validate(settings, TrainParams(end_to_end=True))
    assert report["class_names"] == ["blue_red", "red_blue"] and report["problems"] == []
    result = run_train(settings, TrainParams(epochs=2, batch_size=4, end_to_end=True))
    assert result.kind == "end_to_end" and result.production and not result.reused
    assert result.epochs_run == 2 and result.metrics["examples"] >= 1
    store = FeatureStore.from_settings(settings)
    assert store.parquet_parts() == [] and store.tfrecord_parts() == []
    assert not [p for p in Path(settings.features_root).rglob("*") if p.is_file()]

    summary = run_score(settings, run_id="e2e")  # decodes the media: no features needed
    assert summary.scored == 16
    with Warehouse.connect(settings.warehouse) as wh:
        assert wh.query("SELECT COUNT(*) AS n FROM predictions")[0]["n"] == 16
        production = wh.production_model()
        assert production is not None
        metadata = read_metadata(production)  # the kind is recorded once, in the metadata
    assert metadata["kind"] == "end_to_end"
    # the data report is planned from the clips' durations: one segment of 8 frames each
    assert sum(metadata["data_report"]["segments"].values()) == 16
    assert metadata["data_report"]["frames_per_segment"]["video"]["median"] == 8
    # the same data, settings and parameters reuse the version
    again = run_train(settings, TrainParams(epochs=2, batch_size=4, end_to_end=True))
    assert again.reused and again.model_version == result.model_version


def test_fine_tuning_unfreezes_vgg16(tmp_path: Path, settings: Settings) -> None:
    for i in range(4):
        colour_video(tmp_path / "in" / "r" / f"{i}.mp4", [(250 - 9 * i, 0, 0)], frames_each=4)
        colour_video(tmp_path / "in" / "b" / f"{i}.mp4", [(0, 0, 250 - 9 * i)], frames_each=4)
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    result = run_train(
        settings, TrainParams(epochs=1, batch_size=4, end_to_end=True, cnn_trainable=True)
    )
    from pipeline.model.architecture import load_classifier

    model = load_classifier(f"{result.model_uri}/model.keras")
    encoder = model.get_layer("video_cnn").layer
    assert encoder.get_layer("vgg16").trainable
    assert sum(w.shape.num_elements() for w in model.trainable_weights) > 14_000_000


def _clips(settings: Settings, tmp_path: Path) -> list[ClipRecord]:
    for i in range(6):
        colour_video(tmp_path / "in" / f"v{i}.mp4", [(40 * i, 250 - 40 * i, 90), (0, 0, 200)])
    tone_file(tmp_path / "in" / "a.wav", seconds=2.3, freq=500)  # two segments of audio
    tone_file(tmp_path / "in" / "b.flac", seconds=0.7, freq=900)
    run_ingest(settings, str(tmp_path / "in"))
    with Warehouse.connect(settings.warehouse) as wh:
        return wh.clips()


def test_sampled_statistics_are_bounded_and_deterministic(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    from pipeline.features.cnn import build_embedder

    settings: Settings = make_settings(segment_seconds=1.0)
    clips = _clips(settings, tmp_path)
    spec = SequenceSpec.from_settings(settings)
    embedder = build_embedder("none", 32, "float32", 4, settings.seed)

    def sample(seed: int, **bounds: int):  # type: ignore[no-untyped-def]
        return sampled_frame_statistics(clips, ("video",), spec, embedder, seed=seed, **bounds)

    first = sample(7, max_clips=3, max_images=12)
    # 3 clips decoded, each giving its share ceil(12 / 3) = 4 of its 8 video frames
    assert (first.clips, first.images) == (3, {"video": 12})
    again = sample(7, max_clips=3, max_images=12)
    for got, expected in zip(again.by_stream["video"], first.by_stream["video"], strict=True):
        np.testing.assert_array_equal(got, expected)
    other = sample(8, max_clips=3, max_images=12)
    assert not np.array_equal(other.by_stream["video"][0], first.by_stream["video"][0])
    capped = sample(7, max_clips=6, max_images=5)  # the image cap ends the pass early
    assert capped.images == {"video": 5} and capped.clips == 5

    # Unbounded, the sample is every frame: the statistics of the cached features.
    run_extract(settings)
    store = FeatureStore.from_settings(settings)
    ids = [c.clip_id for c in clips]
    both = sampled_frame_statistics(
        clips, ("video", "audio"), spec, embedder, seed=1, max_clips=100, max_images=10_000
    )
    assert both.clips == 8 and both.images["video"] == 6 * 8 and both.images["audio"] > 0
    for stream in ("video", "audio"):
        for got, cached in zip(
            both.by_stream[stream], feature_statistics(store, ids, stream), strict=True
        ):
            np.testing.assert_allclose(got, cached, rtol=1e-4, atol=1e-5)
