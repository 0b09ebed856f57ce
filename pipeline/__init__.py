"""stpipe: classify video and audio clips with a frozen VGG-16 + LSTM head.

Stages (each a package, a function in :mod:`pipeline.stages`, a CLI command and an Airflow
task): ingest -> extract -> train -> score. See README.md for the tour and docs/architecture.md
for the code layout.
Importing this package has no side effects.
"""

__version__ = "0.1.0"
