"""The trainer service (see ../shared/DESIGN.md). Not implemented yet: `driftloop serve trainer` says so."""
