"""The ``fourm-hf`` command.

Each subcommand is one module of ``fourm_hf.commands`` (``fourm-hf make-scenes`` ->
``fourm_hf.commands.make_scenes``), which defines ``add_arguments(parser)`` and ``main(args) -> int`` and
calls the library code it drives. Modules are imported only when their subcommand runs, so
``fourm-hf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# Errors a user's input or machine causes: printed as one line `fourm-hf <command>: error: ...`, exit 2.
# FOURM_HF_TRACEBACK=1 shows the traceback instead.
EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
                   IsADirectoryError)
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "the file system is read-only"}

# subcommand -> (module, one-line help)
COMMANDS = {
    "assemble-processor": ("fourm_hf.commands.assemble_processor", "put a trained text tokenizer and VQ-VAEs together into one FourMProcessor folder"),
    "assemble-ml4m": ("fourm_hf.commands.assemble_ml4m", "put a released 4M model (converted or converted on the fly), its released tokenizers and the text tokenizer into one runnable folder"),
    "assemble-checkpoint": ("fourm_hf.commands.assemble_checkpoint", "put a trained model, its processor and a model card (with an evaluation table) into one checkpoint folder"),
    "build-corpus": ("fourm_hf.commands.build_corpus", "tokenize a labeled dataset into the 4M training corpus (K shared crops per image, VQ-VAE ids, text ids)"),
    "convert-ml4m": ("fourm_hf.commands.convert_ml4m", "convert a reference 4M checkpoint into a from_pretrained folder"),
    "demo": ("fourm_hf.commands.demo", "run the bundled 4M on held-out scenes and real photographs: PNG grids of every modality and a scored report (--web: an interactive Gradio app)"),
    "evaluate": ("fourm_hf.commands.evaluate", "score a checkpoint on held-out scenes beside the tokenizer ceiling, a trivial baseline and specialists"),
    "make-scenes": ("fourm_hf.commands.make_scenes", "render the embedded scene corpus (RGB, depth, normals, semseg, boxes, captions) as a datasets dataset"),
    "pseudo-label": ("fourm_hf.commands.pseudo_label", "add pseudo-labels (depth, normals, semseg, boxes, feature maps, captions) to images with transformers models"),
    "push-to-hub": ("fourm_hf.commands.push_to_hub", "upload a 4M checkpoint folder (model, processor, generated model card) to the Hugging Face Hub in one commit"),
    "train-text-tokenizer": ("fourm_hf.commands.train_text_tokenizer", "train the WordPiece text tokenizer (4M id layout) on a caption corpus"),
    "train-tokenizer": ("fourm_hf.commands.train_tokenizer", "train a VQ-VAE tokenizer for one dense modality on a scene dataset"),
    "write-shards": ("fourm_hf.commands.write_shards", "cut a corpus (save_to_disk folder) into Parquet shards that datasets streams from a folder or a Hub dataset repo"),
    "train": ("fourm_hf.commands.train", "pretrain a 4M model with the Trainer from a YAML config (model, masking, data, training)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fourm-hf", description="4M (Massively Multimodal Masked Modeling) tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])  # prints help or a usage error and exits
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"fourm-hf {argv[0]}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return run_command(argv[0], module.main, args)


def run_command(name: str, command_main, args) -> int:
    """Run a command's ``main``; an expected error becomes one line on stderr and exit status 2."""
    try:
        return int(command_main(args) or 0)
    except Exception as error:
        if os.environ.get("FOURM_HF_TRACEBACK") == "1" or not is_expected(error):
            raise
        print(f"fourm-hf {name}: error: {describe(error)}", file=sys.stderr)
        return 2


def is_expected(error: BaseException) -> bool:
    return isinstance(error, EXPECTED_ERRORS) or (isinstance(error, OSError) and error.errno in DISK_ERRNOS)


def describe(error: BaseException) -> str:
    """One line: the message, or for an OSError its reason and the file it concerns."""
    if isinstance(error, OSError) and error.errno is not None:
        reason = DISK_ERRNOS.get(error.errno, error.strerror or str(error))
        where = f": {error.filename}" if error.filename else ""
        return f"{reason}{where}" + ("; free some space or choose another output folder" if error.errno == errno.ENOSPC else "")
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
