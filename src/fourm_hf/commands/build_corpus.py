"""``fourm-hf build-corpus``: tokenize a labeled dataset into the 4M training corpus (``fourm_hf.data.corpus``).

With a processor of released tokenizers (``assemble-ml4m``, a saved processor folder or a released model id)
it also writes 4M-21's columns (``data/corpus_columns.py``; docs/corpus-4m21.md). The pose and SAM-instance
tokenizers, whose ids travel inside text, are not model modalities that ``assemble-ml4m`` pairs; give their
released folders with ``--sequence-tokenizers`` (or save a processor that holds them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoints import bundled_checkpoint
from ..data.corpus import CROP_MODES, build_corpus, build_info
from ..data.shards import load_dataset_split
from ..ml4m.assembly import resolve_tokenizer_modalities
from ..processing.processing_fourm import FourMProcessor
from ..processing.sequence_tokens import POSE_IDS, SAM_MASK_SIZE, SEQUENCE_TOKENIZER_MODALITIES, SequenceTokenizers
from ..tokenizers.released import FourMTokenizerModel
from ..tokenizers.released_modalities import ReleasedModalityTokenizer, modality_kind

BUNDLED_PROCESSOR = "bundled"
"""``--processor bundled``: the processor of the checkpoint that ships inside the package (unless a folder has that name)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="labeled dataset (save_to_disk folder, scene schema)")
    parser.add_argument("--split", default="train", help="split to read when --dataset is a DatasetDict")
    parser.add_argument("--processor", required=True,
                        help="a saved FourMProcessor folder (with its VQ-VAEs; an assemble-ml4m folder), a released model "
                             "id, or 'bundled': the bundled checkpoint's")
    parser.add_argument("--out", required=True, help="output folder (datasets.save_to_disk format)")
    parser.add_argument("--crops", type=int, default=1, help="crops per source image")
    parser.add_argument("--crop", choices=CROP_MODES, default="random", help="how crops are chosen")
    parser.add_argument("--seed", type=int, default=0, help="crop k of image i uses default_rng((seed, i, k))")
    parser.add_argument("--batch-size", type=int, default=16, help="source images per tokenizer batch")
    parser.add_argument("--shard-size", type=int, default=1024, help="source images per resumable shard")
    parser.add_argument("--modalities", nargs="+", default=None,
                        help="corpus columns to write (tok_rgb, sam_instance, ...); default: every one the dataset and "
                             "the processor allow (a named one that cannot be written is an error)")
    parser.add_argument("--sequence-tokenizers", nargs="+", default=[], metavar="DIR_OR_MODALITY=DIR",
                        help="released pose / SAM-instance tokenizer folders (4M_tokenizers_human-poses_1k_8, "
                             "4M_tokenizers_sam-instance_1k_64, or human_poses=DIR / sam_instance=DIR) for the "
                             "human_poses / sam_instance columns")
    parser.add_argument("--device", default=None, help="device for the tokenizers (e.g. cuda)")


def load_sequence_tokenizers(arguments, device=None) -> SequenceTokenizers:
    """``--sequence-tokenizers`` -> ``{modality: ReleasedModalityTokenizer}`` (pose kind, or instance kind on 64x64 masks)."""
    found = SequenceTokenizers()
    for modality, folder in resolve_tokenizer_modalities(arguments).items():
        if modality not in SEQUENCE_TOKENIZER_MODALITIES:
            raise ValueError(f"--sequence-tokenizers {folder}: a {modality} tokenizer; this option takes the "
                             f"{' / '.join(SEQUENCE_TOKENIZER_MODALITIES)} tokenizers (image tokenizers belong in the processor)")
        kind = modality_kind(modality)
        try:
            tokenizer = ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(folder), modality, kind,
                                                  image_size=1 if kind == "pose" else SAM_MASK_SIZE)
        except ValueError as error:
            raise ValueError(f"--sequence-tokenizers {folder}: {error}") from None
        if kind == "pose" and tokenizer.config.num_tokens != POSE_IDS:
            raise ValueError(f"--sequence-tokenizers {folder}: a pose tokenizer gives {POSE_IDS} ids, this one "
                             f"{tokenizer.config.num_tokens}")
        found[modality] = tokenizer.eval().requires_grad_(False).to(device or "cpu")
    return found


def main(args: argparse.Namespace) -> int:
    dataset = load_dataset_split(args.dataset, args.split)
    folder = args.processor
    if folder == BUNDLED_PROCESSOR and not Path(folder).is_dir():
        folder = bundled_checkpoint()
    processor = FourMProcessor.from_pretrained(folder, device=args.device)
    if args.sequence_tokenizers:
        processor.sequence_tokenizers = SequenceTokenizers({**(getattr(processor, "sequence_tokenizers", None) or {}),
                                                            **load_sequence_tokenizers(args.sequence_tokenizers, args.device)})
    corpus = build_corpus(dataset, processor, args.out, crops=args.crops, batch_size=args.batch_size,
                          shard_size=args.shard_size, seed=args.seed, crop=args.crop, modalities=args.modalities)
    for column, why in build_info(args.out).get("skipped", {}).items():
        print(f"skipped column {column!r}: {why}")
    print(f"wrote {len(corpus)} rows ({len(dataset)} images x {args.crops} crops) to {args.out}: {sorted(corpus.features)}")
    return 0
