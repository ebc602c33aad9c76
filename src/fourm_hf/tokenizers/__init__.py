"""Neural tokenizers: dense maps and vectors <-> code ids (our VQ-VAE, the released ViT / DiVAE / MLP tokenizers, quantizers, diffusion)."""
