"""The seed's end-to-end model trains from decoded media, registers, and scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.registry.artifacts import read_metadata
from pipeline.stages import run_extract, run_ingest, run_score, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.media_factory import colour_video

pytestmark = pytest.mark.slow


def test_end_to_end_model_trains_on_decoded_frames_and_scores(
    tmp_path: Path, settings: Settings
) -> None:
    for i in range(8):
        shade = 250 - 8 * i
        colour_video(tmp_path / "in" / "red_blue" / f"{i}.mp4", [(shade, 0, 0), (0, 0, shade)])
        colour_video(tmp_path / "in" / "blue_red" / f"{i}.mp4", [(0, 0, shade), (shade, 0, 0)])
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    run_extract(settings)  # the data inventory and standardisation statistics come from here
    result = run_train(settings, TrainParams(epochs=3, batch_size=4, end_to_end=True))
    assert result.kind == "end_to_end" and result.production
    assert result.metrics["examples"] >= 1
    summary = run_score(settings, run_id="e2e")  # decodes the media: no features needed
    assert summary.scored == 16
    with Warehouse.connect(settings.warehouse) as wh:
        assert wh.query("SELECT COUNT(*) AS n FROM predictions")[0]["n"] == 16
        production = wh.production_model()
        assert production is not None
        # the kind is recorded once, in the version's metadata
        assert read_metadata(production)["kind"] == "end_to_end"


def test_fine_tuning_unfreezes_vgg16(tmp_path: Path, settings: Settings) -> None:
    for i in range(4):
        colour_video(tmp_path / "in" / "r" / f"{i}.mp4", [(250 - 9 * i, 0, 0)], frames_each=4)
        colour_video(tmp_path / "in" / "b" / f"{i}.mp4", [(0, 0, 250 - 9 * i)], frames_each=4)
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    run_extract(settings)
    result = run_train(
        settings, TrainParams(epochs=1, batch_size=4, end_to_end=True, cnn_trainable=True)
    )
    from pipeline.model.architecture import load_classifier

    model = load_classifier(f"{result.model_uri}/model.keras")
    encoder = model.get_layer("video_cnn").layer
    assert encoder.get_layer("vgg16").trainable
    assert sum(w.shape.num_elements() for w in model.trainable_weights) > 14_000_000
