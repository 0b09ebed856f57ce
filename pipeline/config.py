"""Settings: one typed object, built once at the edge (CLI command, Airflow task) and passed down.

Every field comes from an environment variable ``PIPELINE_<FIELD>`` (for example
``PIPELINE_IMAGE_SIZE=64``) or from a settings file: TOML with flat keys, the lower-case field
names (``image_size = 64``). Where a field is set in several places, the first of these wins:

1. keyword arguments to :func:`load_settings` (``load_settings(data_dir=...)``);
2. the environment (``PIPELINE_<FIELD>``);
3. the file ``PIPELINE_SETTINGS_FILE`` names (an error if it does not exist);
4. ``stpipe.toml`` in the data folder, if there is one (``stpipe demo`` writes it, so that every
   later command describes the demo's data); the data folder is the ``data_dir`` of the levels
   above, else ``./data``. Its own ``data_dir`` key, if any, is ignored. Not looked up when the
   data folder is remote (``s3://...``);
5. the defaults below.

Defaults for the sequences each clip becomes:

* segments: a clip longer than ``segment_seconds`` = 10 s is cut into equal segments of about
  that length (a 25 s clip: three of 8.3 s); each segment is one sequence and gets its own
  prediction. Shorter clips are one segment.
* video: ``frames_per_segment`` = 16 frames sampled uniformly over each segment. A video's audio
  track (``audio_of_video``) also becomes spectrogram windows, on the same segment boundaries.
* audio: mono, resampled to ``sample_rate`` = 16 kHz; log-mel spectrogram with ``n_mels`` = 64
  bands, 25 ms analysis window and 10 ms hop; cut into ``audio_window_seconds`` = 0.32 s windows
  every ``audio_hop_seconds`` = 0.16 s. VGGish uses 0.96 s windows for general audio events;
  0.32 s suits short events such as spoken words (a digit in FSDD lasts about 0.3-0.8 s, so it
  spans 2-5 windows and the LSTM sees how its spectrum changes). A segment holds at most
  ``max_frames`` = 64 windows (10.24 s, so a 10 s segment is never cut); audio shorter than one
  window is padded to one.

Features are cached per *stream* (video frames, audio windows): each stream has a hash of the
settings that change its numbers, so changing, say, ``n_mels`` recomputes audio features only.
Which settings those are is declared once, by a :class:`Changes` mark on the field; the stream
views (:attr:`Settings.video_sampling`, :attr:`Settings.audio_framing`), the stream hashes, the
feature-store folder name and ``SequenceSpec`` are all derived from the marks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.errors import ConfigError
from pipeline.features.identity import encoder_identity, short_hash
from pipeline.features.precision import PrecisionDecision, decide_auto_precision

STREAMS = ("video", "audio")
#: The settings file every command reads from the data folder (level 4 of the precedence).
DATA_DIR_SETTINGS_FILE = "stpipe.toml"

Precision = Literal["float32", "bfloat16", "auto"]


@dataclass(frozen=True)
class Changes:
    """Marks a :class:`Settings` field whose value changes the cached features.

    Attributes:
        streams: the streams whose feature values the field changes. ``()``: it changes only
            which rows a feature folder holds, so only :attr:`Settings.settings_hash`.
        hashed_as: ``None`` for a field that shapes the image sequences: it is hashed as is,
            under its own name, and is a field of the streams' views (:class:`VideoSampling`,
            :class:`AudioFraming`) and of ``SequenceSpec``. Otherwise the field changes the
            encoder, and this names the item of :meth:`Settings.stream_settings` that carries
            its effect (the weights id, the resolved precision).
    """

    streams: tuple[str, ...] = ()
    hashed_as: str | None = None


@dataclass(frozen=True)
class VideoSampling:
    """How each segment becomes video frames: the fields marked ``Changes`` with ``'video'``."""

    image_size: int
    segment_seconds: float
    frames_per_segment: int
    max_frames: int

    @property
    def frames_per_sequence(self) -> int:
        """Frames sampled per segment: ``frames_per_segment``, capped by ``max_frames``."""
        return min(self.frames_per_segment, self.max_frames)

    def hashed(self) -> dict[str, Any]:
        """The items of the video stream's settings that come from this view."""
        items = asdict(self)
        # The video hash has always carried the capped frame count under the name
        # frames_per_segment, and not max_frames (a cap above frames_per_segment changes no
        # frame); existing feature folders are named by that payload.
        del items["max_frames"]
        items["frames_per_segment"] = self.frames_per_sequence
        return items


@dataclass(frozen=True)
class AudioFraming:
    """How each segment's audio becomes spectrogram images: the fields marked ``Changes`` with
    ``'audio'``."""

    image_size: int
    segment_seconds: float
    max_frames: int
    sample_rate: int
    n_mels: int
    mel_window_ms: float
    mel_hop_ms: float
    audio_window_seconds: float
    audio_hop_seconds: float

    def hashed(self) -> dict[str, Any]:
        """The items of the audio stream's settings that come from this view."""
        return asdict(self)


_VIEWS: dict[str, type[VideoSampling] | type[AudioFraming]] = {
    "video": VideoSampling,
    "audio": AudioFraming,
}


class Settings(BaseSettings):
    """All pipeline settings. Paths may be local paths or ``s3://`` style URIs."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore", frozen=True)

    data_dir: str = Field("./data", description="Root of everything the pipeline writes.")
    landing_dir: str | None = Field(
        None, description="Folder scanned by `stpipe ingest` with no DIR; default DATA_DIR/landing."
    )
    warehouse_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///DATA_DIR/warehouse.db."
    )
    warehouse_connections_file: str | None = Field(
        None,
        description="An Airflow connections file (JSON) whose connection stpipe_warehouse is "
        "the warehouse when PIPELINE_WAREHOUSE_URL is unset: what the Compose "
        "workers' tasks read, so `stpipe` run by hand in a worker writes where the tasks write.",
    )
    cnn_weights: Annotated[str, Changes(STREAMS, hashed_as="cnn_weights")] = Field(
        "imagenet", description="'imagenet', 'none' (seeded random init) or a weights file path."
    )
    image_size: Annotated[int, Changes(STREAMS)] = Field(
        224, description="CNN input rows = cols, in pixels (>= 32)."
    )
    cnn_precision: Annotated[Precision, Changes(STREAMS, hashed_as="precision")] = Field(
        "auto",
        description="float32, bfloat16, or auto: decided once per deployment (bfloat16 where "
        "the deciding host runs it natively) and recorded in DATA_DIR/features/precision.json.",
    )
    cnn_batch_size: int = Field(32, description="Frames per VGG-16 forward batch.")
    segment_seconds: Annotated[float, Changes(STREAMS)] = Field(
        10.0, description="Clips longer than this become segments."
    )
    frames_per_segment: Annotated[int, Changes(("video",))] = Field(
        16, description="Video frames sampled uniformly per segment."
    )
    max_frames: Annotated[int, Changes(STREAMS)] = Field(
        64, description="Longest sequence (frames or audio windows) kept."
    )
    audio_of_video: Annotated[bool, Changes()] = Field(
        True, description="Also extract the audio track of videos."
    )
    sample_rate: Annotated[int, Changes(("audio",))] = Field(
        16000, description="Audio is resampled to this rate, in Hz."
    )
    n_mels: Annotated[int, Changes(("audio",))] = Field(
        64, description="Mel bands in the log-mel spectrogram."
    )
    mel_window_ms: Annotated[float, Changes(("audio",))] = Field(
        25.0, description="STFT analysis window, milliseconds."
    )
    mel_hop_ms: Annotated[float, Changes(("audio",))] = Field(
        10.0, description="STFT hop, milliseconds."
    )
    audio_window_seconds: Annotated[float, Changes(("audio",))] = Field(
        0.32, description="Spectrogram image width, seconds."
    )
    audio_hop_seconds: Annotated[float, Changes(("audio",))] = Field(
        0.16, description="Step between spectrogram images, seconds."
    )
    decode_workers: int = Field(
        0,
        description="Threads decoding media while the CNN runs; 0 = from the core count (half "
        "the cores, 2 to 8).",
    )
    extract_clips_per_shard: int = Field(
        200, description="Pending clips per feature_extraction task (Airflow mapping)."
    )
    extract_max_shards: int = Field(8, description="Most parallel feature_extraction tasks.")
    # Changes the features only through the weights id of random init (cnn_weights="none").
    seed: Annotated[int, Changes(STREAMS, hashed_as="cnn_weights")] = Field(
        1337, description="Seed for random CNN init, splits of training, shuffles."
    )
    ingest_workers: int = Field(2, description="Files hashed and probed at once by ingest.")
    score_chunk_clips: int = Field(
        512, description="Clips scored per model call and per warehouse transaction."
    )
    # Cost limits per media file (see pipeline/limits.py): over one, a file is quarantined.
    max_file_bytes: int = Field(4 * 1024**3, description="Largest media file accepted, bytes.")
    max_duration_seconds: float = Field(4 * 3600.0, description="Longest clip accepted, seconds.")
    max_frame_pixels: int = Field(
        4096 * 2160, description="Most pixels per video frame (width x height)."
    )
    max_fps: float = Field(240.0, description="Highest video frame rate accepted.")
    min_sample_rate: int = Field(4000, description="Lowest audio sample rate accepted, Hz.")
    max_sample_rate: int = Field(192_000, description="Highest audio sample rate accepted, Hz.")
    min_bytes_per_second: float = Field(
        16.0, description="Fewer bytes per second of claimed duration = implausible header."
    )
    max_streams: int = Field(16, description="Most streams (tracks) in one media file.")
    max_segments_per_clip: int = Field(1440, description="Most segments one clip may become.")
    claim_lease_seconds: float = Field(
        60.0,
        description="A worker's claim on a clip lapses this long after its last heartbeat.",
    )
    train_devices: int = Field(
        1,
        description="Devices one training task uses (tf.distribute.MirroredStrategy): 1 = one "
        "device, no strategy; n = the first n GPUs (n logical CPU devices without GPUs); "
        "0 = every GPU.",
    )
    promotion_margin: float = Field(
        0.0, description="Macro-F1 a new model must gain over production to be promoted."
    )
    review_threshold: float = Field(
        0.6,
        description="Confidence (0-1) below which a production prediction goes to review.",
    )
    drift_psi_threshold: float = Field(
        0.2,
        description="Population stability index above which prediction_drift flags a day.",
    )
    retrain_min_feedback: int = Field(
        0,
        description="New feedback labels that trigger model_training (0: never, off).",
    )
    quarantine_jump_factor: float = Field(
        2.0,
        description="nightly_scoring alerts when a day's quarantine rate exceeds this many times "
        "the mean rate of the 7 days before (and quarantine_rate_floor).",
    )
    quarantine_rate_floor: float = Field(
        0.1,
        description="Quarantine rate (0-1, quarantined / files registered that day) a day must "
        "exceed before it can alert, however calm the week before was.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The precedence of the module docstring: keyword arguments, environment,
        ``PIPELINE_SETTINGS_FILE``, ``DATA_DIR/stpipe.toml``, defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get("PIPELINE_SETTINGS_FILE")
        if settings_file:
            if not Path(settings_file).is_file():
                raise ConfigError(
                    f"PIPELINE_SETTINGS_FILE={settings_file!r} does not exist; "
                    "point it at a TOML file or unset it."
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=settings_file))
        data_dir = settings_cls.model_fields["data_dir"].default
        for source in sources:  # the data dir in use, by the same precedence
            if value := source().get("data_dir"):
                data_dir = value
                break
        data_dir_file = Path(data_dir, DATA_DIR_SETTINGS_FILE)
        if "://" not in str(data_dir) and data_dir_file.is_file():
            values = read_settings_file(data_dir_file)
            values.pop("data_dir", None)  # the file is found through the data dir, not the reverse
            sources.append(InitSettingsSource(settings_cls, init_kwargs=values))
        return tuple(sources)

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: int) -> int:
        if value < 32:
            raise ValueError("VGG-16 needs at least 32x32 pixels; set PIPELINE_IMAGE_SIZE >= 32")
        return value

    @field_validator("decode_workers")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (from the core count) or more")
        return value

    @field_validator(
        "cnn_batch_size",
        "frames_per_segment",
        "max_frames",
        "sample_rate",
        "n_mels",
        "extract_clips_per_shard",
        "extract_max_shards",
        "ingest_workers",
        "score_chunk_clips",
        "max_file_bytes",
        "max_frame_pixels",
        "min_sample_rate",
        "max_streams",
        "max_segments_per_clip",
    )
    @classmethod
    def _check_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a positive integer")
        return value

    @model_validator(mode="after")
    def _check_audio_framing(self) -> Settings:
        if self.mel_hop_ms <= 0 or self.mel_window_ms < self.mel_hop_ms:
            raise ValueError("need 0 < PIPELINE_MEL_HOP_MS <= PIPELINE_MEL_WINDOW_MS")
        if self.audio_hop_seconds <= 0 or self.audio_window_seconds < self.audio_hop_seconds:
            raise ValueError("need 0 < PIPELINE_AUDIO_HOP_SECONDS <= PIPELINE_AUDIO_WINDOW_SECONDS")
        if self.audio_window_seconds * 1000 < 2 * self.mel_hop_ms:
            raise ValueError("an audio window must hold at least two spectrogram hops")
        if self.segment_seconds < self.audio_window_seconds:
            raise ValueError("PIPELINE_SEGMENT_SECONDS must be at least one audio window long")
        if self.max_sample_rate < self.min_sample_rate:
            raise ValueError("need PIPELINE_MIN_SAMPLE_RATE <= PIPELINE_MAX_SAMPLE_RATE")
        for name in ("max_duration_seconds", "max_fps", "claim_lease_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PIPELINE_{name.upper()} must be positive")
        if not 0.0 <= self.review_threshold <= 1.0:
            raise ValueError("PIPELINE_REVIEW_THRESHOLD is a confidence: between 0 and 1")
        if self.drift_psi_threshold <= 0:
            raise ValueError("PIPELINE_DRIFT_PSI_THRESHOLD must be positive")
        if self.retrain_min_feedback < 0:
            raise ValueError("PIPELINE_RETRAIN_MIN_FEEDBACK must be 0 (off) or positive")
        if self.train_devices < 0:
            raise ValueError("PIPELINE_TRAIN_DEVICES must be 0 (every GPU) or a device count")
        if self.quarantine_jump_factor < 1.0:
            raise ValueError("PIPELINE_QUARANTINE_JUMP_FACTOR must be at least 1 (2 = doubled)")
        if not 0.0 <= self.quarantine_rate_floor < 1.0:
            raise ValueError("PIPELINE_QUARANTINE_RATE_FLOOR is a rate: at least 0, below 1")
        if self.min_bytes_per_second < 0:
            raise ValueError("PIPELINE_MIN_BYTES_PER_SECOND must be >= 0")
        return self

    # Resolved locations -------------------------------------------------------------------

    @property
    def landing_root(self) -> str:
        return self.landing_dir or join_uri(self.data_dir, "landing")

    @property
    def media_root(self) -> str:
        """Content-addressed copies of every ingested file (the raw zone)."""
        return join_uri(self.data_dir, "media")

    @property
    def quarantine_root(self) -> str:
        return join_uri(self.data_dir, "quarantine")

    @property
    def staging_root(self) -> str:
        """Local folder where ingest copies a file while hashing it, before moving the copy to
        the media store or the quarantine (on the same file system when the data dir is local)."""
        if "://" in self.data_dir:
            return str(Path(tempfile.gettempdir(), "stpipe-staging"))
        return str(Path(self.data_dir, ".staging"))

    @property
    def features_root(self) -> str:
        return join_uri(self.data_dir, "features")

    @property
    def models_root(self) -> str:
        return join_uri(self.data_dir, "models")

    @property
    def decode_threads(self) -> int:
        """Decoding threads of an extraction task: ``decode_workers``, or from the core count.

        On a CPU host the CNN takes every core and decoding only fills its gaps (the threads
        run at lower priority), so more threads cost little; on a GPU host the cores are free
        for decoding, and half of them keep a GPU fed without starving the rest."""
        if self.decode_workers:
            return self.decode_workers
        return min(8, max(2, len(os.sched_getaffinity(0)) // 2))

    @property
    def runs_root(self) -> str:
        """Checkpoints and TensorBoard logs of training runs, under the data root (local or a
        URI), so a retried training resumes on any worker."""
        return join_uri(self.data_dir, "models", "_runs")

    @property
    def warehouse(self) -> str:
        if self.warehouse_url:
            return self.warehouse_url
        if "://" in self.data_dir:
            raise ConfigError(
                f"PIPELINE_DATA_DIR={self.data_dir!r} is remote, so the embedded SQLite warehouse "
                "has nowhere to live; set PIPELINE_WAREHOUSE_URL (e.g. postgresql+psycopg://...)."
            )
        return f"sqlite:///{Path(self.data_dir, 'warehouse.db')}"

    # What changes the features -------------------------------------------------------------

    def resolved_precision(self) -> Literal["float32", "bfloat16"]:
        """The precision VGG-16 computes in. ``auto`` is the deployment's decision (bfloat16 if
        the host that first resolved it runs bfloat16 natively), read from the feature store, so
        every host of a deployment computes and finds the same features."""
        if self.cnn_precision != "auto":
            return self.cnn_precision
        return self.precision_decision.precision

    @cached_property
    def precision_decision(self) -> PrecisionDecision:
        """What ``auto`` means here (see :mod:`pipeline.features.precision`); decided on first
        use, and recorded, if no process of this deployment decided it before."""
        return decide_auto_precision(self.features_root)

    @cached_property
    def cnn_weights_id(self) -> str:
        """Identity of the CNN weights: a name, or the SHA-256 of a weights file."""
        if self.cnn_weights == "imagenet":
            return "imagenet"
        if self.cnn_weights == "none":
            return f"random-seed{self.seed}"
        path = Path(self.cnn_weights)
        if not path.is_file():
            raise ConfigError(
                f"PIPELINE_CNN_WEIGHTS={self.cnn_weights!r} is neither 'imagenet', 'none' nor an "
                "existing weights file (a Keras VGG16 include_top=False .weights.h5 / .h5 file)."
            )
        return "sha256:" + file_sha256(path)

    @classmethod
    def feature_marks(cls) -> dict[str, Changes]:
        """The fields that change the cached features, with their :class:`Changes` marks."""
        return {
            name: mark
            for name, info in cls.model_fields.items()
            for mark in info.metadata
            if isinstance(mark, Changes)
        }

    def sequence_settings(self) -> dict[str, Any]:
        """The marked fields that shape a clip's image sequences (all but the encoder's), by
        field name: what ``SequenceSpec`` holds."""
        return {
            name: getattr(self, name)
            for name, mark in self.feature_marks().items()
            if mark.hashed_as is None
        }

    @property
    def video_sampling(self) -> VideoSampling:
        return VideoSampling(**self._stream_shape("video"))

    @property
    def audio_framing(self) -> AudioFraming:
        return AudioFraming(**self._stream_shape("audio"))

    def _stream_shape(self, stream: str) -> dict[str, Any]:
        marks = self.feature_marks()
        return {
            name: value
            for name, value in self.sequence_settings().items()
            if stream in marks[name].streams
        }

    def stream_settings(self, stream: str) -> dict[str, Any]:
        """Everything that changes the numbers the extractor writes for one stream: which
        encoder computes them, and the stream's view of the fields marked for it."""
        if stream not in _VIEWS:
            raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
        view = _VIEWS[stream](**self._stream_shape(stream))
        return {**encoder_identity(self.cnn_weights_id, self.resolved_precision()), **view.hashed()}

    def stream_hash(self, stream: str) -> str:
        return short_hash(self.stream_settings(stream))

    def feature_settings(self) -> dict[str, Any]:
        """What a feature-store folder holds: both streams' settings and their hashes."""
        return {**self._folder_identity(), **{s: self.stream_settings(s) for s in STREAMS}}

    @property
    def settings_hash(self) -> str:
        """Names the feature-store folder: the stream hashes plus what combines them."""
        return short_hash(self._folder_identity())

    def _folder_identity(self) -> dict[str, Any]:
        """The stream hashes and the fields marked as changing no stream (which rows exist)."""
        combining = {name for name, mark in self.feature_marks().items() if not mark.streams}
        return {
            **{f"{s}_hash": self.stream_hash(s) for s in STREAMS},
            **{name: getattr(self, name) for name in sorted(combining)},
        }


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and settings file), turning errors into ConfigError."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"PIPELINE_{'_'.join(str(p) for p in err['loc']).upper() or 'SETTINGS'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    if "://" not in settings.data_dir and not Path(settings.data_dir).is_absolute():
        settings = settings.model_copy(update={"data_dir": str(Path(settings.data_dir).resolve())})
    return settings


def read_settings_file(path: Path) -> dict[str, Any]:
    """The keys of a flat TOML settings file; a file TOML cannot read is a ConfigError."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read the settings file {path} ({exc}); fix it, or delete it to use the "
            "environment and the defaults."
        ) from exc


def join_uri(root: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI root, with '/' separators."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
