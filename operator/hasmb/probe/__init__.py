"""hasmb.probe."""
