"""Local features: ORB keypoints stored in the bundle, a visual-word index, verification."""
