"""The any-to-any pipeline and the PNG grid of one sample's inputs and outputs."""

from .any_to_any import DEFAULT_DECODING, FourMAnyToAnyPipeline, register_any_to_any_pipeline
from .grid import make_grid, save_grid

__all__ = ["DEFAULT_DECODING", "FourMAnyToAnyPipeline", "make_grid", "register_any_to_any_pipeline", "save_grid"]
