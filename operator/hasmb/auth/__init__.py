"""hasmb.auth."""
