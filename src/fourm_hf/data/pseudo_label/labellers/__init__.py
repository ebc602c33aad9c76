"""Labellers backed by a pretrained model (one per file): each runs a transformers model over the images."""
