"""``fourm-hf assemble-processor``: a trained text tokenizer and trained VQ-VAEs -> one FourMProcessor folder.

The image size comes from the VQ-VAEs (they must agree), the segmentation class count from the
semseg VQ-VAE when there is one. The folder is written under a temporary name and then renamed,
so an interrupted run never leaves a half-written processor behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..output_paths import check_output_dir, staging_dir
from .image_processing_fourm import FourMImageProcessor
from .processing_fourm import FourMProcessor
from ..text.tokenization_fourm import FourMTextTokenizer
from ..tokenizers.vqvae import FourMVQVAE


def assemble_processor(text_tokenizer, vqvae_folders: Sequence, out, num_semseg_classes: int | None = None,
                       max_text_length: int = 256) -> FourMProcessor:
    """Build a FourMProcessor from a saved text tokenizer and saved VQ-VAE folders, save it to ``out``."""
    if not vqvae_folders:
        raise ValueError("assemble-processor: give at least one --vqvae folder")
    vqvaes = [FourMVQVAE.from_pretrained(str(folder)) for folder in vqvae_folders]
    sizes = {vqvae.config.image_size for vqvae in vqvaes}
    if len(sizes) != 1:
        raise ValueError(f"assemble-processor: the VQ-VAEs read different image sizes {sorted(sizes)}; they must agree")
    for vqvae in vqvaes:
        if vqvae.config.input_kind == "semseg":
            num_semseg_classes = vqvae.config.num_classes
    options = {"image_size": sizes.pop()}
    if num_semseg_classes is not None:
        options["num_semseg_classes"] = int(num_semseg_classes)
    processor = FourMProcessor(
        FourMImageProcessor(**options),
        FourMTextTokenizer.from_pretrained(str(text_tokenizer)),
        vqvaes={vqvae.config.modality: vqvae for vqvae in vqvaes},
        max_text_length=max_text_length,
    )
    out = check_output_dir(out, "assemble-processor: --out")
    if out.exists():
        raise ValueError(f"assemble-processor: {out} already exists; choose a new folder")
    staging = staging_dir(out, hidden=True)  # removes what a killed earlier run left
    processor.save_pretrained(staging)
    os.replace(staging, out)
    return processor


__all__ = ["assemble_processor"]
