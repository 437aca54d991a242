"""hasmb.controller."""
