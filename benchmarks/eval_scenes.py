"""4M on held-out rendered scenes beside the tokenizer ceiling, a trivial baseline and specialists.

    python benchmarks/eval_scenes.py --checkpoint DIR [--num-scenes 200] [--batch-size 16] \\
        [--specialist depth=DIR --specialist semseg=DIR] [--train-stats DATASET_DIR] \\
        [--caption-prompts 20] [--out eval.json] [--markdown table.md] [--num-threads 1]

The same code as ``fourm-hf evaluate`` (``fourm_hf.commands.evaluate``): prints the markdown table,
the caption -> RGB line and the command/date line to paste into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from fourm_hf.cli import run_command
from fourm_hf.commands import evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    evaluate.add_arguments(parser)
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    # run_command: expected errors as one line, as under fourm-hf
    return run_command("evaluate", lambda parsed: evaluate.main(parsed, program="python benchmarks/eval_scenes.py"), args)


if __name__ == "__main__":
    sys.exit(main())
