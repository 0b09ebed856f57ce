"""What the pipeline holds, shown to people: the summary behind ``stpipe status`` and the end of
the demo (``report``), and the daily HTML report (``daily`` collects it from the warehouse,
``html`` and ``plots`` render it; queries in :mod:`pipeline.warehouse`)."""
