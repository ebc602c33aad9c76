"""The reference implementation's checkpoints: names, conversion both ways, reference batches, assembly of released folders."""
