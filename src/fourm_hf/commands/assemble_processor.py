"""``fourm-hf assemble-processor``: a trained text tokenizer and trained VQ-VAEs -> one FourMProcessor folder."""

from __future__ import annotations

import argparse

from ..processing.assemble_processor import assemble_processor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-tokenizer", required=True, help="folder of a saved FourMTextTokenizer")
    parser.add_argument("--vqvae", nargs="+", required=True, metavar="DIR", help="folders of saved FourMVQVAE models")
    parser.add_argument("--out", required=True, help="new folder for the processor")
    parser.add_argument("--num-semseg-classes", type=int, default=None,
                        help="class count for segmentation inputs (default: from the semseg VQ-VAE)")
    parser.add_argument("--max-text-length", type=int, default=256)


def main(args: argparse.Namespace) -> int:
    processor = assemble_processor(args.text_tokenizer, args.vqvae, args.out, args.num_semseg_classes,
                                   args.max_text_length)
    print(f"Wrote {args.out}: image size {processor.image_size}, VQ-VAEs {sorted(processor.vqvaes)}")
    return 0
