"""Workstation side: a catalog of photos becomes a versioned lensbox bundle."""
