"""Raw modalities <-> token dicts: the image processor, FourMProcessor, token decoding and visualisation."""
