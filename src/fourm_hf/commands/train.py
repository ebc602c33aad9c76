"""``fourm-hf train``: pretrain a 4M model with the Trainer from a YAML config (``fourm_hf.training.pretrain``).

A rerun of the same command resumes from the last complete checkpoint of its output dir; a run with other
settings into the same output dir is refused unless ``--overwrite-output-dir`` (``training/checkpoints.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from ..output_paths import check_output_dir
from ..training.checkpoints import checkpoint_step, finish_complete_run, rerun_resume_point, save_settings, saved_settings
from ..training.pretrain import build_trainer, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pretraining YAML (sections model, masking, data, training)")
    parser.add_argument("--output-dir", default=None, help="checkpoints and the final model (overrides training.output_dir)")
    parser.add_argument(
        "--resume-from-checkpoint", nargs="?", const=True, default=None, metavar="PATH",
        help="resume from PATH, or without PATH from the last checkpoint in the output dir (a rerun of the same "
             "command does this by itself)",
    )
    parser.add_argument("--overwrite-output-dir", action="store_true",
                        help="delete the checkpoints in the output dir and start again from step 0")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. training.max_steps=10")


def main(args: argparse.Namespace) -> int:
    resume, overrides = args.resume_from_checkpoint, list(args.overrides)
    if isinstance(resume, str) and "=" in resume and not os.path.exists(resume):
        # `--resume-from-checkpoint training.max_steps=9`: argparse took the override for the PATH
        resume, overrides = True, [resume, *overrides]
    try:
        if isinstance(resume, str) and not os.path.isdir(resume):
            raise ValueError(f"--resume-from-checkpoint: {resume!r} is not a checkpoint folder.")
        settings = load_settings(args.config, overrides)
        if args.output_dir or settings["training"].get("output_dir"):  # before anything is loaded or built
            check_output_dir(args.output_dir or settings["training"]["output_dir"], "--output-dir")
        trainer = build_trainer(settings, output_dir=args.output_dir)
        output_dir = trainer.args.output_dir
        resolved = {**settings, "training": {**settings["training"], "output_dir": output_dir}}
        if resume is None:  # a rerun of the same command resumes
            resume = rerun_resume_point(output_dir, saved_settings(output_dir), yaml.safe_load(yaml.safe_dump(resolved)),
                                        args.overwrite_output_dir)
            if resume is not None and trainer.args.should_save:
                print(f"fourm-hf train: resuming from {resume}, the last complete checkpoint", file=sys.stderr)
    except ValueError as error:
        print(f"fourm-hf train: {error}", file=sys.stderr)
        return 2
    if trainer.args.should_save:
        save_settings(resolved, output_dir)
    if isinstance(resume, str) and checkpoint_step(resume) >= trainer.args.max_steps > 0:
        return finish_complete_run(trainer, resume)  # the Trainer would take one more step
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(output_dir)
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    if trainer.args.should_save:
        trainer.save_metrics("all", metrics)
        print(yaml.safe_dump({k: float(v) if isinstance(v, (int, float)) else v for k, v in metrics.items()}, sort_keys=True))
    return 0
