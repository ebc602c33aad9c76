"""Trainer glue, metrics and model cards."""
