"""Parameter counts of the size presets and their training-state memory, printed as a table.

    python benchmarks/model_sizes.py

Each preset is built with its default modalities (4M-7: RGB pixels and tokens, depth, normals,
segmentation, CLIP, caption, boxes) on the meta device, so nothing is allocated. Training state is fp32
weights + gradients + two AdamW moments = 16 bytes per parameter, before any sharding and without
activations.
"""

from __future__ import annotations

import torch

from fourm_hf import SIZE_PRESETS, FourMConfig, FourMModel

BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, AdamW exp_avg and exp_avg_sq


def main() -> None:
    print(f"{'preset':8} {'parameters':>12} {'training state':>16}")
    for preset in SIZE_PRESETS:
        config = FourMConfig.from_preset(preset)
        with torch.device("meta"):
            model = FourMModel(config)
        count = sum(parameter.numel() for parameter in model.parameters())
        print(f"{preset:8} {count / 1e9:>10.3f} B {count * BYTES_PER_PARAMETER / 1e9:>13.1f} GB")


if __name__ == "__main__":
    main()
