"""What the pipeline holds, for ``stpipe status`` and the end of the demo (queries in
:mod:`pipeline.warehouse`)."""
