"""Stage 2: pixels become descriptors, through the one TFLite model both builder and device use."""
