"""``fourm-hf convert-ml4m``: a reference 4M checkpoint -> a ``from_pretrained`` folder (``fourm_hf.ml4m.conversion``)."""

from __future__ import annotations

import argparse

from ..ml4m.conversion import convert_ml4m_checkpoint, resolve_reference_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="reference weights (.safetensors) or a released-layout folder")
    source.add_argument("--repo-id", help="a released Hub repo, e.g. EPFL-VILAB/4M-21_XL (downloaded with huggingface_hub)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of --repo-id")
    parser.add_argument("--config", default=None, help="reference config.json (default: the one beside the weights)")
    parser.add_argument("--output", required=True, help="new folder for the converted model")


def main(args: argparse.Namespace) -> int:
    weights, config = resolve_reference_files(args.checkpoint, args.config, args.repo_id, args.revision)
    model = convert_ml4m_checkpoint(weights, config, args.output)
    print(f"Converted {args.repo_id or weights} ({model.num_parameters():,} parameters) to {args.output}")
    return 0
