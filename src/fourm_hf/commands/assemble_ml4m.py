"""``fourm-hf assemble-ml4m``: one runnable folder from the released 4M files (``fourm_hf.ml4m.assembly``)."""

from __future__ import annotations

import argparse
import sys

from ..ml4m.assembly import assemble_ml4m


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a fourm-hf convert-ml4m folder, or a reference checkpoint (released folder or .safetensors)")
    parser.add_argument("--config", default=None, help="reference config.json when --model is a file without one beside it")
    parser.add_argument("--tokenizers", nargs="+", default=[], metavar="DIR_OR_MODALITY=DIR",
                        help="released tokenizer folders (named like their repo, 4M_tokenizers_rgb_16k_224-448) or MODALITY=DIR")
    parser.add_argument("--text-tokenizer", required=True, help="the reference tokenizers JSON or a FourMTextTokenizer folder")
    parser.add_argument("--feature-model", nargs="*", default=[], metavar="MODALITY=DIR",
                        help="a local transformers vision model for a feature tokenizer, e.g. tok_clip=clip-vit-base-patch16")
    parser.add_argument("--num-diffusion-steps", type=int, default=25, help="DDIM steps of the diffusion (DiVAE) decoders")
    parser.add_argument("--allow-missing-tokenizers", action="store_true",
                        help="assemble even if some image outputs of the model have no tokenizer (they cannot be decoded)")
    parser.add_argument("--out", required=True, help="the new folder")


def main(args: argparse.Namespace) -> int:
    try:
        summary = assemble_ml4m(args.model, args.tokenizers, args.text_tokenizer, args.out, config=args.config,
                                num_diffusion_steps=args.num_diffusion_steps,
                                allow_missing_tokenizers=args.allow_missing_tokenizers, feature_models=args.feature_model)
    except ValueError as error:
        print(f"fourm-hf assemble-ml4m: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: tokenizers {sorted(summary['tokenizers'])}; pipeline targets {summary['targets']}")
    for name in summary["output_only"]:
        print(f"  output only: {name} (no --feature-model: decoded, but not computed from the input image)")
    for name, why in summary["undecodable"].items():
        print(f"  not decodable: {name} ({why})")
    return 0
