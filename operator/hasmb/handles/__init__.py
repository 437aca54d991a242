"""hasmb.handles."""
