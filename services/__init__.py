"""driftloop services: ingest, trainer, inference, monitor, and the `driftloop` command."""
