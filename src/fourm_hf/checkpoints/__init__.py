"""The checkpoint that ships inside the package, and how a shareable checkpoint folder is put together.

``fourm-scenes64/`` is a small 4M trained on the embedded scene corpus (64 px); the README's demo,
``fourm-hf demo`` and the tests use it. ``examples/scenes64/reproduce.sh`` rebuilds it from nothing,
its last step being::

    fourm-hf assemble-checkpoint --model runs/scenes64/fourm_stage2 --processor runs/scenes64/processor \\
        --evaluation runs/scenes64/eval.json --bundled --no-remote-code --out src/fourm_hf/checkpoints/fourm-scenes64

which puts the model, its processor (text tokenizer, VQ-VAEs) and a model card (with the evaluation
table) into one folder that ``AutoModel``, ``AutoProcessor`` and
``pipeline("any-to-any")`` load.

The bundled folder holds no code: it ships inside the package, so whoever loads it has the package
(``--no-remote-code``). A folder saved from it (``save_pretrained``) still gets the flat model and
processor code, as any saved folder does; and as its configs keep their ``auto_map``,
``fourm-hf push-to-hub --checkpoint`` adds the code that ``auto_map`` names to the uploaded copy
(``fourm_hf.hub.add_remote_code``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "fourm-scenes64"
"""Folder of the bundled checkpoint (model + processor + model card)."""

BUNDLED_TRAINING_DATA = (
    "The embedded scene corpus of `fourm-hf`: 10,000 procedurally rendered 64x64 scenes (`fourm-hf make-scenes "
    "--num 10000 --size 64 --seed 0`) of 1-4 coloured spheres, cubes, cylinders and cones on a floor, with exact "
    "depth, surface normals, semantic segmentation, boxes and captions. Trained on a 2-core CPU in two stages, "
    "`examples/scenes64/fourm_scenes64.yaml` (3000 steps of batch 32) then `fourm_scenes64_stage2.yaml` (6000 more); "
    "`examples/scenes64/reproduce.sh` rebuilds everything, tokenizers and evaluation included."
)


def bundled_checkpoint() -> str:
    """The bundled checkpoint folder as a string, checked to exist."""
    if not (BUNDLED_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled checkpoint is missing at {BUNDLED_CHECKPOINT}; reinstall fourm-hf, or rebuild it "
            "with examples/scenes64/reproduce.sh"
        )
    return str(BUNDLED_CHECKPOINT)


def assemble_checkpoint(model, processor, out, evaluation=None, training_data: str | None = None,
                        title: str | None = None, license: str | None = None, remote_code: bool = True) -> Path:
    """Write ``out``: the FourM model folder ``model`` and the FourMProcessor folder ``processor``
    side by side, and a model card.

    The folder gets no ``custom_pipelines`` entry: with one, ``pipeline("any-to-any", model=out)``
    would insist on ``trust_remote_code=True`` even where fourm_hf is installed. ``push_checkpoint``
    adds the entry to the copy it uploads, for Hub users without the package.

    Args:
        model / processor: folders saved by ``save_pretrained`` (a ``fourm-hf train`` output dir, an
            ``assemble-processor`` output).
        out: the new folder; replaced as a whole, atomically (built beside it, then renamed).
        evaluation: a ``fourm-hf evaluate --out`` JSON; its markdown report goes into the card.
        training_data / title / license: for the card.
        remote_code: keep the flat package code ``save_pretrained`` writes next to the weights (for
            ``trust_remote_code`` users without the package). False for a checkpoint that ships
            inside the package: its loaders have the package.
    """
    from ..hub import DEFAULT_LICENSE, write_model_card
    from ..modeling.modeling_fourm import FourMModel
    from ..processing.processing_fourm import FourMProcessor

    for field, folder, name in (("--model", model, "config.json"), ("--processor", processor, "processor_config.json")):
        if not (Path(folder) / name).is_file():
            raise ValueError(f"{field} {folder}: no {name}; expected a folder written by save_pretrained")
    report = None
    if evaluation is not None:
        if not Path(evaluation).is_file():
            raise ValueError(f"--evaluation {evaluation}: not a file; expected the JSON of fourm-hf evaluate --out")
        report = json.loads(Path(evaluation).read_text(encoding="utf-8")).get("markdown")
        if not report:
            raise ValueError(f"--evaluation {evaluation}: no 'markdown' entry; expected the JSON of fourm-hf evaluate --out")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is meant to be read by everyone
    try:
        FourMModel.from_pretrained(str(model)).save_pretrained(staging)
        FourMProcessor.from_pretrained(str(processor)).save_pretrained(staging)
        if not remote_code:
            for module in staging.glob("*.py"):
                module.unlink()
        write_model_card(staging, title=title or out.name, evaluation=report, training_data=training_data,
                         license=license or DEFAULT_LICENSE)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


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


def main(args) -> int:
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
