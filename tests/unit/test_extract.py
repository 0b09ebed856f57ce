from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.stages import plan_extraction, run_extract, run_ingest
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env
from tests.media_factory import colour_video, gray_ramp_video, tone_file

pytestmark = pytest.mark.slow


def _small_corpus(root: Path) -> None:
    gray_ramp_video(root / "ramp" / "a.mp4")
    colour_video(root / "colour" / "b.mkv", [(255, 0, 0), (0, 0, 255)])
    tone_file(root / "tone" / "c.wav", seconds=1.0)
    tone_file(root / "tone" / "d.ogg", seconds=0.2, freq=880)


def _names(settings: Settings) -> dict[str, str]:
    with Warehouse.connect(settings.warehouse) as wh:
        return {Path(c.uri).name: c.clip_id for c in wh.clips()}


def test_extract_stores_both_streams_per_segment(tmp_path: Path, settings: Settings) -> None:
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    summary = run_extract(settings)
    assert (summary.extracted, summary.cached, summary.quarantined, summary.segments) == (
        4,
        0,
        0,
        4,
    )
    store = FeatureStore.from_settings(settings)
    frames = {name: store.segment_frames()[cid] for name, cid in _names(settings).items()}
    # video: frames_per_segment (8), silent videos have an empty audio stream;
    # 1 s of audio: 5 windows; 0.2 s: padded to 1 window
    assert frames == {
        "a.mp4": [{"video": 8, "audio": 0}],
        "b.mkv": [{"video": 8, "audio": 0}],
        "c.wav": [{"video": 0, "audio": 5}],
        "d.ogg": [{"video": 0, "audio": 1}],
    }
    assert summary.frames == 22
    settings_file = json.loads((Path(store.folder) / "settings.json").read_text())
    assert settings_file["video"]["image_size"] == 32
    assert settings_file["audio_hash"] == settings.stream_hash("audio")
    # Frames of a red-then-blue video are not all alike: the CNN saw different pictures.
    colour = store.read_segments([_names(settings)["b.mkv"]])[_names(settings)["b.mkv"]][0]
    assert not np.allclose(colour.stream("video")[0], colour.stream("video")[-1])


def test_rerun_skips_everything_without_importing_tensorflow(
    tmp_path: Path, settings: Settings
) -> None:
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    run_extract(settings)
    files_before = sorted(p.name for p in Path(settings.features_root).rglob("*") if p.is_file())
    script = (
        "import sys, json\n"
        "from pipeline.config import load_settings\n"
        "from pipeline.stages import run_extract\n"
        "summary = run_extract(load_settings())\n"
        "print(json.dumps({'summary': summary.as_dict(),"
        " 'tf': 'tensorflow' in sys.modules, 'av': 'av' in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**pipeline_env(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["summary"]["cached"] == 4 and report["summary"]["extracted"] == 0
    assert report["tf"] is False and report["av"] is False
    files_after = sorted(p.name for p in Path(settings.features_root).rglob("*") if p.is_file())
    assert files_after == files_before


def test_changed_audio_setting_recomputes_audio_only(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    _small_corpus(tmp_path / "in")
    base = make_settings()
    run_ingest(base, str(tmp_path / "in"), labelled=True)
    run_extract(base)
    fewer_mels = make_settings(n_mels=32)
    assert fewer_mels.stream_hash("video") == base.stream_hash("video")
    summary = run_extract(fewer_mels)
    # Both videos' frames are copied; their (missing) audio tracks and both audio files are
    # recomputed: only audio windows went through the CNN.
    assert (summary.extracted, summary.reused_streams) == (4, 2)
    assert summary.frames == 6  # 5 + 1 audio windows; no video frames
    old = FeatureStore.from_settings(base).read_segments()
    new = FeatureStore.from_settings(fewer_mels).read_segments()
    names = _names(base)
    for video in ("a.mp4", "b.mkv"):
        np.testing.assert_array_equal(
            old[names[video]][0].stream("video"), new[names[video]][0].stream("video")
        )
    assert not np.allclose(
        old[names["c.wav"]][0].stream("audio"), new[names["c.wav"]][0].stream("audio")
    )
    assert run_extract(base).cached == 4  # the old features are still there and still valid


def test_changed_image_size_recomputes_everything_into_a_new_folder(
    tmp_path: Path, make_settings
) -> None:  # type: ignore[no-untyped-def]
    _small_corpus(tmp_path / "in")
    small = make_settings()
    run_ingest(small, str(tmp_path / "in"), labelled=True)
    run_extract(small)
    bigger = make_settings(image_size=48)
    summary = run_extract(bigger)
    assert (summary.extracted, summary.reused_streams, summary.frames) == (4, 0, 22)
    assert FeatureStore.from_settings(small).folder != FeatureStore.from_settings(bigger).folder


def test_long_clip_becomes_segments(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(segment_seconds=1.0)
    tone_file(tmp_path / "in" / "long.wav", seconds=4.0)
    gray_ramp_video(tmp_path / "in" / "ramp.mp4", n_frames=30, fps=10)
    run_ingest(settings, str(tmp_path / "in"))
    summary = run_extract(settings)
    assert summary.segments == 4 + 3
    store = FeatureStore.from_settings(settings)
    names = _names(settings)
    audio = store.read_segments([names["long.wav"]])[names["long.wav"]]
    assert [(s.segment_index, s.n_segments, s.start_seconds) for s in audio] == [
        (0, 4, 0.0),
        (1, 4, 1.0),
        (2, 4, 2.0),
        (3, 4, 3.0),
    ]
    assert all(s.stream("audio").shape == (5, 512) for s in audio)
    video = store.read_segments([names["ramp.mp4"]])[names["ramp.mp4"]]
    assert [s.stream("video").shape[0] for s in video] == [8, 8, 8]


def test_clip_that_fails_to_decode_is_quarantined_and_the_rest_extracted(
    tmp_path: Path, settings: Settings
) -> None:
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    with Warehouse.connect(settings.warehouse) as wh:
        victim = next(c for c in wh.clips() if c.uri.endswith("a.mp4"))
    # The stored copy gets damaged after ingest (disk fault, bad sync).
    Path(victim.media_uri).write_bytes(b"garbage" * 100)  # type: ignore[arg-type]
    summary = run_extract(settings)
    assert (summary.extracted, summary.quarantined) == (3, 1)
    with Warehouse.connect(settings.warehouse) as wh:
        clip = wh.get_clip(victim.clip_id)
    assert (
        clip is not None and clip.status == "quarantined" and "cannot decode" in (clip.error or "")
    )
    reason = Path(settings.quarantine_root, f"{victim.clip_id}.reason.txt").read_text()
    assert "cannot decode" in reason
    assert run_extract(settings).cached == 3  # quarantined clips are no longer pending


def test_shards_partition_the_pending_clips(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(extract_clips_per_shard=2)
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    plan = plan_extraction(settings)
    assert [p["shard"] for p in plan] == [0, 1] and {p["shards"] for p in plan} == {2}
    assert sum(p["clips"] for p in plan) == 4
    summaries = [run_extract(settings, shard=p["shard"], shards=p["shards"]) for p in plan]
    assert [s.extracted for s in summaries] == [p["clips"] for p in plan]
    assert FeatureStore.from_settings(settings).clip_ids() == set(_names(settings).values())
    assert plan_extraction(settings) == [{"shard": 0, "shards": 1, "clips": 0}]


def test_extract_with_no_clips_is_a_no_op(settings: Settings) -> None:
    summary = run_extract(settings)
    assert (summary.clips, summary.extracted) == (0, 0)


def test_batcher_feeds_the_cnn_full_batches_across_sequence_boundaries() -> None:
    from pipeline.extract.engine import ClipWork, _Batcher
    from pipeline.extract.plan import ClipPlan
    from pipeline.features.cnn import build_embedder
    from pipeline.media.decode import Segment
    from pipeline.media.sequences import SegmentImages
    from pipeline.warehouse.database import ClipRecord

    embedder = build_embedder("none", 32, "float32", 4, seed=0)
    calls: list[int] = []
    original = embedder.embed_frames

    def counting(images: np.ndarray) -> np.ndarray:
        calls.append(images.shape[0])
        return original(images)

    embedder.embed_frames = counting  # type: ignore[method-assign]
    done: dict[int, np.ndarray] = {}
    batcher = _Batcher(
        embedder,
        lambda _w, item, feats: done.__setitem__(item.segment.index, feats),
        batches_per_call=1,
    )
    clip = ClipRecord("c" * 64, "/x", "/x", "video", None, "train", "ok", None, 1.0)
    work = ClipWork(ClipPlan(clip, ("video",), {}))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (3, 5, 2, 7)]
    for i, images in enumerate(sequences):
        batcher.add(work, SegmentImages(Segment(i, 4, i, i + 1), "video", images))
    batcher.finish()
    assert sum(calls) == 17
    assert all(n % 4 == 0 for n in calls[:-1])  # only the final call may be partial
    for i, images in enumerate(sequences):
        np.testing.assert_allclose(done[i], original(images), rtol=1e-5, atol=1e-5)


def test_a_clip_that_raises_anything_is_quarantined_and_the_rest_extracted(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: decoding one clip raises an exception no code path expects (a bug in a
    # decoder binding, say). Only that clip may suffer.
    import pipeline.extract.engine

    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    victim = _names(settings)["c.wav"]
    real = pipeline.extract.engine.iter_clip_images

    def flaky(uri: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if victim in uri:
            raise KeyError("codec table entry 7")
        return real(uri, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.extract.engine, "iter_clip_images", flaky)
    summary = run_extract(settings)
    assert (summary.extracted, summary.quarantined) == (3, 1)
    with Warehouse.connect(settings.warehouse) as wh:
        clip = wh.get_clip(victim)
    assert clip is not None and clip.status == "quarantined"
    assert clip.error == "KeyError: 'codec table entry 7'"
    reason = Path(settings.quarantine_root, f"{victim}.reason.txt").read_text()
    assert "failed during extraction" in reason and "KeyError" in reason


def test_decoding_threads_yield_the_cpu_to_the_cnn_and_their_cost_is_reported(
    tmp_path: Path, settings: Settings
) -> None:
    import os
    import threading

    from pipeline.extract.engine import DECODE_NICENESS, _yield_to_the_cnn

    seen: list[int] = []

    def worker() -> None:
        _yield_to_the_cnn()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0) + DECODE_NICENESS]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < seen[0]  # not this one

    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"))
    summary = run_extract(settings)
    assert summary.extracted == 4 and summary.decode_cpu_seconds > 0
    # no more than every core for the whole run
    whole_run = summary.seconds + summary.setup_seconds + 1
    assert summary.decode_cpu_seconds < whole_run * (os.cpu_count() or 1)
