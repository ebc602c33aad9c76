"""``fourm-hf write-shards``: cut a corpus into Parquet shards that ``datasets`` streams (``fourm_hf.data.parquet_shards``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.parquet_shards import SHARDS_INFO_FILE, write_parquet_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True,
                        help="the corpus: a datasets.save_to_disk folder (build-corpus, pseudo-label, make-scenes)")
    parser.add_argument("--split", default="train",
                        help="split to read when --dataset is a DatasetDict; also the split name in the shard file names")
    parser.add_argument("--out", required=True,
                        help="output folder: data/<split>-0000k-of-0000n.parquet and parquet_shards.json (a rerun resumes)")
    parser.add_argument("--shard-size", type=int, default=1000, help="rows per shard (the last one may be shorter)")
    parser.add_argument("--columns", nargs="+", metavar="COLUMN",
                        help="write only these columns (e.g. --columns caption: a text-only dataset); default all")


def main(args: argparse.Namespace) -> int:
    source = Path(args.dataset)
    if not source.is_dir():
        raise ValueError(f"--dataset {args.dataset}: not a folder; expected a folder saved with datasets.save_to_disk.")
    out = write_parquet_shards(source, args.out, shard_size=args.shard_size, split=args.split, columns=args.columns)
    info = json.loads((Path(out) / SHARDS_INFO_FILE).read_text())
    print(f"wrote {info['rows']} rows as {info['num_shards']} Parquet shards of at most {info['shard_size']} rows "
          f"to {out}/data: columns {info['columns']}")
    return 0
