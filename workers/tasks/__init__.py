"""Celery tasks, one module per queue. Tasks are thin: decode the message, call pure code or
a runtime, record status, hand over to the next stage; `workers.stage.run_stage` settles
every outcome."""
