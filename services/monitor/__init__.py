"""The monitor service (see ../shared/DESIGN.md). Not implemented yet: `driftloop serve monitor` says so."""
