"""Telling an operator when a night goes wrong.

* :mod:`pipeline.monitoring.alerts`: what an alert says (DAG, task, run, logical date, the
  error, what to do) and where it goes (:class:`~pipeline.monitoring.alerts.AlertRoutes`, read
  from the environment). Standard library only.
* :mod:`pipeline.monitoring.notifiers`: the Airflow notifiers that deliver an alert (email
  through the SMTP provider, a JSON POST to a webhook) and the deadline callback. Imports
  Airflow; only the DAG files and their tasks use it.
* :mod:`pipeline.monitoring.health`: the nightly health check (a day flagged by
  ``prediction_drift``, a jump of the quarantine rate).
"""
