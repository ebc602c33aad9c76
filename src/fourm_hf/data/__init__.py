"""Where training data comes from: rendered scenes, pseudo-labels, corpora and masking."""
