"""Ask a cloud provider when the local answer is weak."""
