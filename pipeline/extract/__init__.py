"""Stage 2, extract: decode each clip, run the frozen CNN once per image, write the feature
store.

* :mod:`~pipeline.extract.stage`: :func:`extract_features`, the stage (skip cached clips,
  coordinate with other runs through claims, summarize);
* :mod:`~pipeline.extract.plan`: which clips and streams to compute, which to copy (no threads);
* :mod:`~pipeline.extract.engine`: the threaded decode -> CNN -> writer engine;
* :mod:`~pipeline.extract.summary`: what a run did.

Importing this package does not import TensorFlow.
"""

from pipeline.extract.plan import shard_of
from pipeline.extract.stage import extract_features
from pipeline.extract.summary import ExtractSummary, combine_summaries

__all__ = ["ExtractSummary", "combine_summaries", "extract_features", "shard_of"]
