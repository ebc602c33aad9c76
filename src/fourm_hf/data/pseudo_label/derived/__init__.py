"""Labellers computed without a model (one per file): from the image itself or from other labellers' columns."""
