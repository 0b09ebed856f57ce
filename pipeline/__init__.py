"""stpipe: classify video and audio clips with a frozen VGG-16 + LSTM head.

Stages (each a module, a CLI command and an Airflow task):
ingest -> extract -> train -> score. See README.md for the tour.
Importing this package has no side effects.
"""

__version__ = "0.1.0"
