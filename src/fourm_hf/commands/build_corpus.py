"""``fourm-hf build-corpus``: tokenize a labeled dataset into the 4M training corpus (``fourm_hf.data.corpus``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoints import bundled_checkpoint
from ..data.corpus import CROP_MODES, build_corpus, build_info
from ..data.shards import load_dataset_split
from ..processing.processing_fourm import FourMProcessor

BUNDLED_PROCESSOR = "bundled"
"""``--processor bundled``: the processor of the checkpoint that ships inside the package (unless a folder has that name)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="labeled dataset (save_to_disk folder, scene schema)")
    parser.add_argument("--split", default="train", help="split to read when --dataset is a DatasetDict")
    parser.add_argument("--processor", required=True,
                        help="a saved FourMProcessor folder (with its VQ-VAEs), or 'bundled': the bundled checkpoint's")
    parser.add_argument("--out", required=True, help="output folder (datasets.save_to_disk format)")
    parser.add_argument("--crops", type=int, default=1, help="crops per source image")
    parser.add_argument("--crop", choices=CROP_MODES, default="random", help="how crops are chosen")
    parser.add_argument("--seed", type=int, default=0, help="crop k of image i uses default_rng((seed, i, k))")
    parser.add_argument("--batch-size", type=int, default=16, help="source images per VQ-VAE batch")
    parser.add_argument("--shard-size", type=int, default=1024, help="source images per resumable shard")
    parser.add_argument("--modalities", nargs="+", default=None,
                        help="corpus columns to write (tok_rgb, sam_instance, ...); default: every one the dataset and "
                             "the processor allow (a named one that cannot be written is an error)")
    parser.add_argument("--device", default=None, help="device for the VQ-VAEs (e.g. cuda)")


def main(args: argparse.Namespace) -> int:
    dataset = load_dataset_split(args.dataset, args.split)
    folder = args.processor
    if folder == BUNDLED_PROCESSOR and not Path(folder).is_dir():
        folder = bundled_checkpoint()
    processor = FourMProcessor.from_pretrained(folder, device=args.device)
    corpus = build_corpus(dataset, processor, args.out, crops=args.crops, batch_size=args.batch_size,
                          shard_size=args.shard_size, seed=args.seed, crop=args.crop, modalities=args.modalities)
    skipped = build_info(args.out).get("skipped", {})
    for column, why in skipped.items():
        print(f"skipped column {column!r}: {why}")
    print(f"wrote {len(corpus)} rows ({len(dataset)} images x {args.crops} crops) to {args.out}: {sorted(corpus.features)}")
    return 0
