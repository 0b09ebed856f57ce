"""Project exceptions. Each message says what was wrong and what to do about it."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for errors the pipeline reports to its users."""


class ConfigError(PipelineError):
    """A setting is missing, malformed or inconsistent."""


class MediaError(PipelineError):
    """A media file cannot be probed or decoded; the clip is quarantined."""


class StoreError(PipelineError):
    """The feature store is inconsistent or unreadable."""


class DataValidationError(PipelineError):
    """The training data cannot produce a meaningful model."""


class NoProductionModelError(PipelineError):
    """Scoring was asked for but no model has been promoted to production."""
