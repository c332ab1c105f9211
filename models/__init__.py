"""The model shipped with lensbox (see MODEL_CARD.md); paths only, nothing heavy imported."""
