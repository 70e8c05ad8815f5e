"""The inference service (see ../shared/DESIGN.md). Not implemented yet: `driftloop serve inference` says so."""
