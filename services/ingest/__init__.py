"""The ingest service (see ../shared/DESIGN.md). Not implemented yet: `driftloop serve ingest` says so."""
