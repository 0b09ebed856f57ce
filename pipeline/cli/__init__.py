"""The `stpipe` command line: a thin Typer layer over :mod:`pipeline.stages` (the inspection
commands also read the feature store, the registry and the warehouse directly)."""

from pipeline.cli.app import main

__all__ = ["main"]
