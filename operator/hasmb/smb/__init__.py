"""hasmb.smb."""
