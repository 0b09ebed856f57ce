"""``python -m pipeline`` is the ``stpipe`` command."""

from pipeline.cli.app import main

main()
