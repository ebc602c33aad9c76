"""``fourm-hf assemble-checkpoint``: a trained model, its processor and a model card in one folder
(``fourm_hf.hub.assemble_checkpoint``)."""

from __future__ import annotations

import argparse
import sys

from ..checkpoints import BUNDLED_TRAINING_DATA
from ..hub import assemble_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a saved FourM model folder (e.g. a fourm-hf train output dir)")
    parser.add_argument("--processor", required=True, help="a saved FourMProcessor folder")
    parser.add_argument("--out", required=True, help="the checkpoint folder to write (replaced atomically)")
    parser.add_argument("--evaluation", default=None, metavar="JSON", help="fourm-hf evaluate --out JSON, for the card")
    parser.add_argument("--training-data", default=None, help="text describing the training data, for the card")
    parser.add_argument("--bundled", action="store_true", help="describe the training data as the bundled checkpoint's")
    parser.add_argument("--title", default=None, help="card title (default: the folder name)")
    parser.add_argument("--no-remote-code", action="store_true",
                        help="leave out the flat package code (for a checkpoint shipped inside the package)")


def main(args: argparse.Namespace) -> int:
    training_data = BUNDLED_TRAINING_DATA if args.bundled and not args.training_data else args.training_data
    try:
        out = assemble_checkpoint(args.model, args.processor, args.out, evaluation=args.evaluation,
                                  training_data=training_data, title=args.title,
                                  remote_code=not args.no_remote_code)
    except ValueError as error:
        print(f"fourm-hf assemble-checkpoint: {error}", file=sys.stderr)
        return 2
    files = sorted(path for path in out.rglob("*") if path.is_file())
    size = sum(path.stat().st_size for path in files)
    print(f"wrote {out}: {len(files)} files, {size / 2**20:.1f} MiB")
    return 0
