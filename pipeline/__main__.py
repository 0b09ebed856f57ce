"""``python -m pipeline`` is the ``stpipe`` command."""

from pipeline.cli import main

main()
