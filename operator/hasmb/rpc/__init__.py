"""hasmb.rpc."""
