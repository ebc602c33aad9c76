"""The any-to-any pipeline."""
