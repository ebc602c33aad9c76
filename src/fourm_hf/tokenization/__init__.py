"""Modality <-> tokens: the text tokenizer, VQ-VAEs, the image processor and the processor."""
