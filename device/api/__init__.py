"""Stage 5: the LAN HTTP API, native and shaped like the four cloud contracts."""
