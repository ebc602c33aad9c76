"""The 4M transformer: layers, embeddings, the model, decoding and checkpoint conversion."""
