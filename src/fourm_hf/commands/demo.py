"""``fourm-hf demo``: the bundled 4M on held-out scenes and photographs (``fourm_hf.app.demo``), or with
``--web`` the same model as a Gradio app (``fourm_hf.app.web_app``; Gradio is imported only then)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..app.demo import DEFAULT_NUM_SCENES, DEFAULT_PROMPTS, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="a FourM model + processor folder (default: the bundled checkpoint)")
    parser.add_argument("--out", default="demo", help="output folder for the PNG grids and report.md (default: demo)")
    parser.add_argument("--num-scenes", type=int, default=DEFAULT_NUM_SCENES, help="held-out scenes to run and score")
    parser.add_argument("--photos", nargs="*", default=None, metavar="NAME",
                        help="scikit-image photographs to run (default: all; give none to skip)")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help="held-out captions to turn into images")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars over decoding steps")
    parser.add_argument("--web", action="store_true",
                        help="serve an interactive Gradio app instead of writing PNGs (needs: pip install -e \".[web]\")")
    parser.add_argument("--port", type=int, default=None, help="--web: port (default: the first free one from 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="--web: address to listen on (default: 127.0.0.1)")


def main(args: argparse.Namespace) -> int:
    if args.web:
        return main_web(args)
    try:
        report = run_demo(args.checkpoint, args.out, args.num_scenes, args.photos, args.prompts, args.seed,
                          progress=not args.no_progress)
    except (ValueError, OSError) as error:  # OSError: transformers could not find or read the checkpoint
        print(f"fourm-hf demo: {error}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
    print(f"wrote {len(report['scenes']) + len(report['photos']) + len(report['prompts'])} PNG grids and report.md to {args.out}")
    return 0


def main_web(args: argparse.Namespace) -> int:
    """``fourm-hf demo --web``: serve the Gradio app until Ctrl+C."""
    if args.port is not None and not 1 <= args.port <= 65535:
        print(f"fourm-hf demo: --port must lie in [1, 65535], got {args.port}", file=sys.stderr)
        return 2
    try:
        from ..app.web_app import launch  # imports Gradio's wrapper only when --web is given

        launch(args.checkpoint, port=args.port, host=args.host)
    except ImportError as error:
        print(f"fourm-hf demo --web: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"fourm-hf demo --web: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
