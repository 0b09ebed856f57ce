"""The four stages as the CLI and the Airflow tasks call them: settings in, small summary out.

Each function opens what it needs from the settings (warehouse, feature store, model folders)
and calls the stage's own function with plain arguments.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from pipeline import storage
from pipeline.config import STREAMS, Settings, join_uri
from pipeline.errors import ConfigError, InfrastructureError
from pipeline.extract import ExtractSummary, extract_features, shard_of
from pipeline.features.store import FeatureStore, stores_with_stream
from pipeline.ingest.register import IngestSummary, discover_media, ingest_media, read_manifest
from pipeline.media.limits import MediaLimits
from pipeline.media.sequences import SequenceSpec
from pipeline.monitoring.alerts import AlertSender, send_alert
from pipeline.monitoring.health import HealthReport, HealthThresholds, check_health
from pipeline.progress import Progress
from pipeline.registry.gate import GateDecision, promotion_gate
from pipeline.registry.promotion import PromotionMode, promote_version, promotion_mode
from pipeline.registry.versions import get_model
from pipeline.reporting.daily import collect_daily_report, write_daily_report
from pipeline.reporting.html import render_daily_report
from pipeline.scoring.score import ScoreSummary, score_clips
from pipeline.training.data import prepare_data
from pipeline.training.job import TrainingJob, TrainResult
from pipeline.training.params import TrainParams
from pipeline.warehouse.claims import WarehouseClaims
from pipeline.warehouse.database import FeedbackItem, FeedbackRecord, Warehouse, as_datetime

if TYPE_CHECKING:
    from pipeline.features.cnn import FrameEmbedder

log = logging.getLogger(__name__)


def run_ingest(
    settings: Settings,
    source: str | None = None,
    *,
    labelled: bool = False,
    manifest: str | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Ingest ``source`` (labels from ``<label>/`` folders if ``labelled``), the files listed in
    a CSV ``manifest`` (path, label, split), or the landing folder (labels from
    ``labelled/<label>/``) when neither is given."""
    if manifest is not None:
        if source is not None:
            raise ConfigError("give either a folder or a manifest, not both")
        found = read_manifest(manifest, settings.landing_root)
    else:
        root = source if source is not None else settings.landing_root
        if not storage.exists(root):
            if source is None:
                storage.makedirs(root)
                log.info("created the empty landing folder %s; drop media files there", root)
            else:
                raise ConfigError(f"{root} does not exist; pass a folder of media files to ingest")
        found = discover_media(
            root, labelled=labelled and source is not None, landing_layout=source is None
        )
    with Warehouse.connect(settings.warehouse) as warehouse:
        return ingest_media(
            found,
            warehouse,
            media_root=settings.media_root,
            quarantine_root=settings.quarantine_root,
            staging_root=settings.staging_root,
            limits=MediaLimits.from_settings(settings),
            workers=settings.ingest_workers,
            progress=progress,
        )


def run_extract(
    settings: Settings,
    *,
    shard: int = 0,
    shards: int = 1,
    progress: Progress | None = None,
) -> ExtractSummary:
    """Cache VGG-16 features for the ok clips of one shard that lack them under the current
    settings (all clips with the default single shard)."""
    if not 0 <= shard < shards:
        raise ConfigError(f"shard {shard} is not in 0..{shards - 1}")
    feature_settings = settings.feature_settings()
    store = FeatureStore.from_settings(settings)
    store.write_settings(feature_settings)
    reuse_from = {
        stream: stores_with_stream(
            settings.features_root,
            stream,
            feature_settings[f"{stream}_hash"],
            exclude=store.settings_hash,
        )
        for stream in STREAMS
    }

    def make_embedder() -> FrameEmbedder:
        from pipeline.features.cnn import build_embedder

        return build_embedder(
            settings.cnn_weights,
            settings.image_size,
            settings.resolved_precision(),
            settings.cnn_batch_size,
            settings.seed,
        )

    with Warehouse.connect(settings.warehouse) as warehouse:
        clips = [c for c in warehouse.clips(status="ok") if shard_of(c.clip_id, shards) == shard]
        namespace = f"features/{store.settings_hash}"
        with WarehouseClaims(warehouse, namespace, settings.claim_lease_seconds) as claims:
            return extract_features(
                clips,
                store,
                SequenceSpec.from_settings(settings),
                make_embedder,
                quarantine=_quarantine_callback(warehouse, settings, "extraction"),
                claims=claims,
                limits=MediaLimits.from_settings(settings),
                reuse_from=reuse_from,
                decode_workers=settings.decode_threads,
                progress=progress,
                shard=f"{shard + 1}/{shards}",
            )


def _quarantine_callback(
    warehouse: Warehouse, settings: Settings, stage: str
) -> Callable[[str, str], None]:
    """What a stage calls to quarantine a clip it could not process: the warehouse row and a
    reason file in the quarantine folder."""

    def quarantine(clip_id: str, reason: str) -> None:
        warehouse.quarantine_clip(clip_id, reason)
        storage.write_bytes(
            join_uri(settings.quarantine_root, f"{clip_id}.reason.txt"),
            f"failed during {stage}\n{reason}\n".encode(),
        )

    return quarantine


def plan_extraction(settings: Settings) -> list[dict[str, int]]:
    """Split the ok clips lacking features into shards for parallel extraction tasks.

    Returns one ``{"shard": k, "shards": n, "clips": pending}`` per shard (at least one), with
    ``n = ceil(pending / extract_clips_per_shard)`` capped at ``extract_max_shards``. Each task
    recomputes its own pending clips, so clips ingested in between are not lost.
    """
    store = FeatureStore.from_settings(settings)
    with Warehouse.connect(settings.warehouse) as warehouse:
        done = store.clip_ids()
        pending = [c.clip_id for c in warehouse.clips(status="ok") if c.clip_id not in done]
    shards = max(
        1, min(settings.extract_max_shards, -(-len(pending) // settings.extract_clips_per_shard))
    )
    counts = [0] * shards
    for clip_id in pending:
        counts[shard_of(clip_id, shards)] += 1
    return [{"shard": k, "shards": shards, "clips": counts[k]} for k in range(shards)]


def run_train(
    settings: Settings, params: TrainParams | None = None, *, promote: bool | None = None
) -> TrainResult:
    """Train a model on the current settings' features (or, end to end, on the media), register
    it, and promote it if asked (``promote=True``), never (``False``), or if it passes the
    promotion gate (``None``)."""
    from pipeline.training.trainer import train_model  # TensorFlow

    job = _training_job(settings, params, promote)
    store = FeatureStore.from_settings(settings)
    with Warehouse.connect(settings.warehouse) as warehouse:
        return train_model(warehouse.clips(status="ok", labelled=True), store, warehouse, job)


def run_validate(settings: Settings, params: TrainParams | None = None) -> dict[str, Any]:
    """Check the data ``params`` would train on, without training: per-class counts, sequence
    lengths, problems.

    Raises:
        DataValidationError: the data cannot train a meaningful model (the message lists why).
    """
    job = _training_job(settings, params, None)
    store = FeatureStore.from_settings(settings)
    with Warehouse.connect(settings.warehouse) as warehouse:
        data = prepare_data(warehouse.clips(status="ok", labelled=True), store, job)
    return {
        **data.report.as_dict(),
        "streams": list(data.training_set.streams),
        "class_names": data.training_set.class_names,
    }


def _training_job(
    settings: Settings, params: TrainParams | None, promote: bool | None
) -> TrainingJob:
    return TrainingJob(
        models_root=settings.models_root,
        feature_settings=settings.feature_settings(),
        sequence_spec=SequenceSpec.from_settings(settings),
        cnn_weights=settings.cnn_weights,
        cnn_precision=settings.resolved_precision(),
        params=params or TrainParams(seed=settings.seed),
        promotion=promotion_mode(promote),
        promotion_margin=settings.promotion_margin,
        claim_lease_seconds=settings.claim_lease_seconds,
        devices=settings.train_devices,
    )


def run_gate(settings: Settings, model_version: str) -> GateDecision:
    """Evaluate ``model_version`` against production on the current test split (no promotion)."""
    with Warehouse.connect(settings.warehouse) as warehouse:
        candidate = get_model(warehouse, model_version)
        return promotion_gate(
            candidate, warehouse, settings.features_root, margin=settings.promotion_margin
        )


def run_promote(
    settings: Settings, model_version: str, mode: PromotionMode = "force"
) -> GateDecision:
    """Make ``model_version`` the production model: at once (``force``) or if it passes the
    gate (``gate``). Returns the decision."""
    with Warehouse.connect(settings.warehouse) as warehouse:
        return promote_version(
            warehouse,
            get_model(warehouse, model_version),
            mode=mode,
            features_root=settings.features_root,
            margin=settings.promotion_margin,
        )


def run_score(
    settings: Settings,
    *,
    run_id: str,
    logical_date: datetime | None = None,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every ok clip lacking a prediction from the production model."""
    with Warehouse.connect(settings.warehouse) as warehouse:
        publish_analyst_settings(warehouse, settings)
        return score_clips(
            warehouse.clips(status="ok"),
            warehouse,
            settings.features_root,
            run_id=run_id,
            logical_date=logical_date,
            quarantine=_quarantine_callback(warehouse, settings, "scoring"),
            progress=progress,
            chunk_clips=settings.score_chunk_clips,
        )


def run_report(settings: Settings, date: date | None = None, out: str | None = None) -> str:
    """Write the daily report for ``date`` (default: today, UTC) into ``out`` (default:
    ``DATA_DIR/reports``) as ``YYYY-MM-DD.html``, and as ``latest.html`` unless a later day's
    report is there. Returns the day's file."""
    day = date or datetime.now(UTC).date()
    with Warehouse.connect(settings.warehouse) as warehouse:
        data = collect_daily_report(warehouse, settings, day)
    page = render_daily_report(data)
    uri = write_daily_report(page, out or join_uri(settings.data_dir, "reports"), day)
    log.info("daily report for %s written to %s", day.isoformat(), uri)
    return uri


def run_label(
    settings: Settings, clip_id: str, label: str, *, reviewer: str, note: str | None = None
) -> FeedbackRecord:
    """Record a reviewer's ``label`` for a clip (``clip_id`` may be a unique prefix of at least
    8 characters): from now on training, evaluation and the views use it.

    Raises:
        ConfigError: unknown clip, ambiguous prefix or invalid label (nothing is written).
    """
    with Warehouse.connect(settings.warehouse) as warehouse:
        publish_analyst_settings(warehouse, settings)
        return warehouse.add_feedback(clip_id, label, reviewer=reviewer, note=note)


def run_label_csv(settings: Settings, csv_uri: str, *, reviewer: str) -> list[FeedbackRecord]:
    """Record the labels of a CSV file with columns ``clip_id`` and ``label`` (optional
    ``reviewer``, default ``reviewer``, and ``note``), all or nothing.

    Raises:
        ConfigError: the file is unreadable or lacks a column, or a row names an unknown clip
            or an invalid label; the message gives the line, and nothing is written.
    """
    items = _read_feedback_csv(csv_uri, reviewer)
    with Warehouse.connect(settings.warehouse) as warehouse:
        publish_analyst_settings(warehouse, settings)
        return warehouse.add_feedback_batch(items)


def publish_analyst_settings(warehouse: Warehouse, settings: Settings) -> None:
    """Copy the thresholds the analyst views use (review, drift) from ``settings`` into the
    warehouse, where the views read them; done by scoring and by recording labels."""
    warehouse.set_analyst_settings(
        review_threshold=settings.review_threshold,
        drift_psi_threshold=settings.drift_psi_threshold,
    )


def _read_feedback_csv(csv_uri: str, reviewer: str) -> list[FeedbackItem]:
    if not storage.exists(csv_uri):
        raise ConfigError(f"labels file {csv_uri} does not exist")
    try:
        text = storage.read_bytes(csv_uri).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"labels file {csv_uri} is not UTF-8 text ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = {"clip_id", "label"} - set(reader.fieldnames or ())
    if missing:
        raise ConfigError(
            f"labels file {csv_uri} needs the columns clip_id and label (optionally reviewer "
            f"and note); {', '.join(sorted(missing))} missing"
        )
    items = []
    for row in reader:
        where = f"{csv_uri}, line {reader.line_num}"
        clip_id, label = (row.get("clip_id") or "").strip(), (row.get("label") or "").strip()
        if not clip_id or not label:
            raise ConfigError(f"{where}: clip_id and label are both needed")
        by = (row.get("reviewer") or "").strip() or reviewer
        note = (row.get("note") or "").strip() or None
        items.append(FeedbackItem(clip_id, label, by, note, where))
    if not items:
        raise ConfigError(f"labels file {csv_uri} has no rows")
    return items


def run_feedback_check(settings: Settings, announced_at: datetime | None = None) -> dict[str, Any]:
    """Reviewer labels recorded since the newest model version was created, or since
    ``announced_at`` (when retraining was last called for) if that is later, and whether they
    call for retraining: ``PIPELINE_RETRAIN_MIN_FEEDBACK`` > 0 (0 = off) and reached. Counting
    from the last call means labels call for retraining once, not every hour until a new
    version exists (a training that is still running, failed or reused the newest version)."""
    with Warehouse.connect(settings.warehouse) as warehouse:
        models = warehouse.models()
        newest = models[-1].created_at if models else None
        since = max((as_datetime(t) for t in (newest, announced_at) if t is not None), default=None)
        new_labels = warehouse.feedback_count_since(since)
    minimum = settings.retrain_min_feedback
    return {
        "new_labels": new_labels,
        "since": since.isoformat() if since is not None else None,
        "retrain_min_feedback": minimum,
        "retrain": minimum > 0 and new_labels >= minimum,
    }


def run_health_check(
    settings: Settings,
    day: date,
    *,
    senders: Iterable[AlertSender] = (),
    dag_id: str | None = None,
    run_id: str | None = None,
) -> HealthReport:
    """Check ``day`` for prediction drift and a quarantine jump (pipeline/monitoring/health.py)
    and, when something is flagged, send the alert through ``senders``. With no sender nothing
    is sent (alerts are off) and the findings are only logged; when every sender fails, raises
    :class:`InfrastructureError` so that the failure shows."""
    thresholds = HealthThresholds(
        quarantine_jump_factor=settings.quarantine_jump_factor,
        quarantine_rate_floor=settings.quarantine_rate_floor,
    )
    with Warehouse.connect(settings.warehouse) as warehouse:
        report = check_health(warehouse, day, thresholds)
    if report.healthy:
        log.info("health check for %s: nothing flagged", day.isoformat())
        return report
    alert = report.alert(dag_id=dag_id, run_id=run_id)
    senders = list(senders)
    log.warning("%s\n%s", alert.subject, "\n".join(report.reasons))
    if not senders:
        log.warning("no alert receiver is configured (PIPELINE_ALERT_*): nothing sent")
        return report
    failures = send_alert(alert, senders)
    if len(failures) == len(senders):
        raise InfrastructureError(
            "the health alert reached no receiver (" + "; ".join(failures) + "); check the "
            "PIPELINE_ALERT_* settings and the SMTP connection, then clear this task"
        )
    return report
