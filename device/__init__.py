"""lensbox device runtime: load a bundle, embed images with the TFLite model, search, serve."""

__version__ = "0.1.0"
