"""hasmb.witness."""
