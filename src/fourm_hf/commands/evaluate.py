"""``fourm-hf evaluate``: score a checkpoint on held-out scenes beside its references
(``fourm_hf.evaluation.report``)."""

from __future__ import annotations

import argparse
import json
import shlex

from ..evaluation.predictors import MODEL_DTYPES, TARGETS
from ..evaluation.report import (
    DEFAULT_CAPTION_PROMPTS,
    parse_carried_rows,
    parse_comparisons,
    parse_specialists,
    run_evaluation,
)
from ..output_paths import write_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="folder with a FourM model and its FourMProcessor")
    parser.add_argument("--processor", default=None,
                        help="FourMProcessor folder for checkpoints (4M or specialists) that hold only the model")
    parser.add_argument("--num-scenes", type=int, default=200, help="held-out scenes to score (default 200)")
    parser.add_argument("--batch-size", type=int, default=16, help="pipeline batch size")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help=f"targets to score (default: {' '.join(TARGETS)})")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                        help="another FourM checkpoint scored on every target, in a row called NAME (repeatable)")
    parser.add_argument("--specialist", action="append", default=[], metavar="TARGET=DIR",
                        help="a single-task FourM checkpoint for TARGET, scored on it alone (repeatable)")
    parser.add_argument("--carry-row", action="append", default=[], metavar="FILE=ROW NAME",
                        help="copy row ROW NAME from an earlier --out JSON of the same held-out scenes, e.g. a specialist "
                             "that was not retrained (repeatable)")
    parser.add_argument("--train-stats", default=None, metavar="DATASET_DIR",
                        help="scene dataset for the trivial baseline's statistics (default: render --train-stats-scenes scenes)")
    parser.add_argument("--train-stats-scenes", type=int, default=200, help="scenes rendered for the statistics without --train-stats")
    parser.add_argument("--caption-prompts", type=int, default=None,
                        help=f"held-out captions for caption -> RGB (default: {DEFAULT_CAPTION_PROMPTS} or --num-scenes if fewer; 0 = skip)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument("--device", default=None, help="pipeline device, e.g. cuda:0 (default: the pipeline's choice)")
    parser.add_argument("--dtype", default="float32", choices=sorted(MODEL_DTYPES),
                        help="load the 4M models in this format (default float32)")
    parser.add_argument("--int8", action="store_true",
                        help="quantise the float32 4M models to dynamic int8 (encoder, decoder, heads; CPU only)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the markdown report here")


def command_line(args: argparse.Namespace, program: str = "fourm-hf evaluate") -> str:
    """The command that reproduces ``args`` (every option spelled out, defaults included)."""
    parts = shlex.split(program) + ["--checkpoint", str(args.checkpoint)]
    if args.processor is not None:
        parts += ["--processor", str(args.processor)]
    parts += ["--num-scenes", str(args.num_scenes), "--batch-size", str(args.batch_size), "--targets", *args.targets]
    for value in args.compare:
        parts += ["--compare", value]
    for value in args.specialist:
        parts += ["--specialist", value]
    for value in args.carry_row:
        parts += ["--carry-row", value]
    if args.train_stats is not None:
        parts += ["--train-stats", str(args.train_stats)]
    else:
        parts += ["--train-stats-scenes", str(args.train_stats_scenes)]
    if args.caption_prompts is not None:
        parts += ["--caption-prompts", str(args.caption_prompts)]
    parts += ["--seed", str(args.seed)]
    if getattr(args, "dtype", "float32") != "float32":
        parts += ["--dtype", args.dtype]
    if getattr(args, "int8", False):
        parts += ["--int8"]
    return shlex.join(parts)


def main(args: argparse.Namespace, program: str = "fourm-hf evaluate") -> int:
    """Run the evaluation; ``program`` is how the reproducing command line in the report starts
    (``benchmarks/eval_scenes.py`` passes its own)."""
    command = command_line(args, program)
    result = run_evaluation(
        args.checkpoint, num_scenes=args.num_scenes, targets=args.targets, batch_size=args.batch_size,
        specialists=parse_specialists(args.specialist), comparisons=parse_comparisons(args.compare),
        train_stats=args.train_stats,
        train_stats_scenes=args.train_stats_scenes, caption_prompts=args.caption_prompts, seed=args.seed,
        device=args.device, processor=args.processor, command=command, carry_rows=parse_carried_rows(args.carry_row),
        dtype=args.dtype, int8=args.int8,
    )
    print(result["markdown"])
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    if args.markdown:
        write_atomic(args.markdown, result["markdown"])
    return 0
