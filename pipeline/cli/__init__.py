"""The `stpipe` command line: a thin Typer layer over :mod:`pipeline.stages`."""

from pipeline.cli.app import main

__all__ = ["main"]
