"""``fourm-hf train-tokenizer``: train a VQ-VAE for one dense modality on a scene dataset
(``fourm_hf.tokenizers.train_vqvae``)."""

from __future__ import annotations

import argparse
import json

import torch

from ..tokenizers.train_vqvae import PRESETS, train_tokenizer
from ..tokenizers.vqvae import INPUT_KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", required=True, help="dataset column to tokenise: rgb, depth, normal, semseg, or a feature-map column")
    parser.add_argument("--dataset", required=True, help="folder written by datasets' save_to_disk")
    parser.add_argument("--out", required=True, help="output folder (checkpoint.pt during training, then config.json + model.safetensors)")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image-size", type=int, default=None, help="train at this size (default: the dataset's)")
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=None, help="default: the registered tok_<modality> vocab size, else 1024")
    parser.add_argument("--input-kind", choices=INPUT_KINDS, default=None, help="default: the modality name, else 'feature'")
    parser.add_argument("--num-classes", type=int, default=None, help="semseg classes (default: 1 + the largest id in the data)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--eval-size", type=int, default=64, help="held-out rows (the last ones) when the dataset has no test split")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many total steps")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def main(args: argparse.Namespace) -> int:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    summary = train_tokenizer(
        modality=args.modality,
        dataset=args.dataset,
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        patch_size=args.patch_size,
        vocab_size=args.vocab_size,
        input_kind=args.input_kind,
        num_classes=args.num_classes,
        preset=args.preset,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        eval_size=args.eval_size,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        flip=not args.no_flip,
        seed=args.seed,
        resume=args.resume,
        stop_after=args.stop_after,
    )
    print(json.dumps(summary, indent=2))
    return 0
