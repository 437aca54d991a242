"""hasmb.cli."""
