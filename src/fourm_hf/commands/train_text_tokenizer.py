"""``fourm-hf train-text-tokenizer``: learn the WordPiece text tokenizer (4M id layout) from the text
columns of a dataset (``fourm_hf.text.tokenization_fourm.train_text_tokenizer``)."""

from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from ..data.shards import load_dataset_split
from ..output_paths import check_output_dir, clean_stale_staging
from ..text.text_layout import DEFAULT_COORD_BINS, DEFAULT_NUM_SENTINELS, normalize_class_name
from ..text.tokenization_fourm import save_atomically, train_text_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a `datasets` dataset saved with save_to_disk")
    parser.add_argument("--split", default="train", help="split to read when --dataset is a DatasetDict")
    parser.add_argument(
        "--columns", default="caption", help="comma-separated text columns to learn from (box columns add their labels)"
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--class-names-from",
        metavar="COLUMN",
        help="column of box lists [{'label', 'box'}] whose labels become class tokens ('det' reads 'boxes')",
    )
    classes.add_argument("--class-names", help="comma-separated class names that become single tokens")
    parser.add_argument("--vocab-size", type=int, default=2000, help="WordPieces after the reserved ids")
    parser.add_argument("--num-sentinels", type=int, default=DEFAULT_NUM_SENTINELS)
    parser.add_argument("--coord-bins", type=int, default=DEFAULT_COORD_BINS)
    parser.add_argument("--min-frequency", type=int, default=1)
    parser.add_argument("--out", required=True, help="folder for save_pretrained (written atomically)")


def main(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    clean_stale_staging(args.out)  # what a killed earlier run left
    dataset = load_dataset_split(args.dataset, args.split)
    columns = [_resolve_column(dataset, column.strip()) for column in args.columns.split(",") if column.strip()]
    if not columns:
        raise ValueError("--columns names no column")
    if args.class_names_from:
        class_names = _class_names_from_column(dataset, _resolve_column(dataset, args.class_names_from))
    elif args.class_names:
        class_names = [name for name in args.class_names.split(",") if name.strip()]
    else:
        class_names = []
    with tqdm(total=len(dataset) * len(columns), desc="train-text-tokenizer", unit="text") as progress:
        tokenizer = train_text_tokenizer(
            _iter_column_texts(dataset, columns, progress),
            vocab_size=args.vocab_size,
            class_names=class_names,
            num_sentinels=args.num_sentinels,
            coord_bins=args.coord_bins,
            min_frequency=args.min_frequency,
        )
    save_atomically(tokenizer, args.out)
    print(
        f"saved {args.out}: {len(tokenizer)} ids ({tokenizer.num_sentinels} sentinels, {tokenizer.coord_bins} "
        f"coordinate bins, {len(tokenizer.class_names)} class names, "
        f"{len(tokenizer) - tokenizer.first_wordpiece_id} WordPieces)"
    )
    return 0


def _resolve_column(dataset, column: str) -> str:
    if column in dataset.column_names:
        return column
    if column == "det" and "boxes" in dataset.column_names:
        return "boxes"
    raise ValueError(f"dataset has no column {column!r}; columns are {dataset.column_names}")


def _iter_column_texts(dataset, columns: list[str], progress):
    """Text of every row and column: strings as they are, box lists as their labels joined by spaces."""
    for column in columns:
        for row_index, value in enumerate(dataset[column]):
            progress.update(1)
            if value is None:
                continue
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                labels = [box.get("label") for box in value if isinstance(box, dict)]
                if any(not isinstance(label, str) for label in labels):
                    raise ValueError(f"column {column!r} row {row_index}: every box needs a str 'label'")
                yield " ".join(labels)
            else:
                raise TypeError(
                    f"column {column!r} row {row_index}: expected a str or a list of boxes, got {type(value).__name__}"
                )


def _class_names_from_column(dataset, column: str) -> list[str]:
    names = set()
    for row_index, value in enumerate(dataset[column]):
        for box_index, box in enumerate(value or []):
            if not isinstance(box, dict) or not isinstance(box.get("label"), str):
                raise ValueError(f"column {column!r} row {row_index} box {box_index}: expected {{'label': str, ...}}")
            names.add(normalize_class_name(box["label"]))
    if not names:
        raise ValueError(f"column {column!r} has no box labels to use as class names")
    return sorted(names)
