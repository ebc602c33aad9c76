"""``fourm-hf push-to-hub``: upload a 4M checkpoint folder to the Hub in one commit (``fourm_hf.hub.push_checkpoint``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError

from ..hub import DEFAULT_LICENSE, push_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="folder with a saved FourMModel and/or FourMProcessor")
    parser.add_argument("--repo-id", required=True, help="Hub repo, e.g. user/my-4m (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--card-metrics", default=None, metavar="JSON",
                        help="evaluation results for the card: {name: value} or {task: {name: value}}")
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"license id for the card (default {DEFAULT_LICENSE})")
    parser.add_argument("--dataset", action="append", default=[], metavar="ID", help="Hub dataset id (repeatable)")
    parser.add_argument("--training-data", default=None, help="text describing the training data, for the card")
    parser.add_argument("--no-card", action="store_true", help="do not generate README.md")
    parser.add_argument("--revision", default=None, help="branch to push to (default main)")
    parser.add_argument("--commit-message", default=None)


def main(args: argparse.Namespace) -> int:
    metrics = None
    if args.card_metrics:
        path = Path(args.card_metrics)
        if not path.is_file():
            raise ValueError(f"--card-metrics: {args.card_metrics} is not a file; give an evaluation JSON")
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"--card-metrics {path}: not valid JSON ({error})") from None
    try:
        info = push_checkpoint(
            args.checkpoint, args.repo_id, private=True if args.private else None, revision=args.revision,
            commit_message=args.commit_message, card=not args.no_card, license=args.license,
            datasets=args.dataset, training_data=args.training_data, metrics=metrics,
        )
    except HfHubHTTPError as error:
        print(f"fourm-hf push-to-hub: the Hub refused the upload:\n{error}", file=sys.stderr)
        return 1
    print(f"Pushed {args.checkpoint} to {args.repo_id}: {info.commit_url}")
    return 0
