"""Read throughput of a training corpus: local Arrow against streamed Parquet shards (folder, loopback Hub).

A synthetic build-corpus-like corpus (``random_corpus`` of a 224 px 4M-7 layout: five 14x14 token grids,
caption and det ids, float32 pixels 3x224x224 or, with ``--uint8``, none) is saved with
``save_to_disk`` and as Parquet shards (``write_parquet_shards``). Each round reads every row once, in
order, from each source, interleaved round by round (one thread); it prints samples/s per source
(median of the rounds) and its ratio to local Arrow:

* ``arrow``: ``load_from_disk(...).with_format("numpy")``, row by row (what a map-style corpus gives the Trainer);
* ``parquet``: ``open_parquet_shards(folder)``, the streamed ``datasets.IterableDataset``;
* ``hub``: ``open_parquet_shards("hf://datasets/...")`` from the loopback Hub of ``tests/hub_server.py``
  (real HTTP on 127.0.0.1; each round starts from an empty cache, so it downloads the shards).

    python benchmarks/bench_streaming.py [--rows 512] [--shard-size 128] [--rounds 3] [--no-pixels]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def read_all(rows) -> int:
    count = 0
    for _ in rows:
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pixels", action="store_true", help="token columns only (no float32 pixel_values)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from datasets import load_from_disk
    from huggingface_hub import HfApi

    from fourm_hf.data.parquet_shards import open_parquet_shards, write_parquet_shards
    from fourm_hf.testing_utils import tiny_config
    from fourm_hf.training.pretrain import random_corpus
    from hub_server import HubServer, huggingface_hub_pointed_at

    root = Path(tempfile.mkdtemp(prefix="bench_streaming_"))
    config = tiny_config(image_size=224, patch_size=16)
    corpus = random_corpus(config, args.rows, seed=0)
    if args.no_pixels:
        corpus = corpus.remove_columns("pixel_values")
    corpus.save_to_disk(str(root / "arrow"))
    write_parquet_shards(corpus, root / "shards", shard_size=args.shard_size)
    size = sum(f.stat().st_size for f in (root / "shards" / "data").iterdir()) / 2**20
    print(f"{args.rows} rows, columns {corpus.column_names}, {size:.1f} MiB of Parquet in "
          f"{len(list((root / 'shards' / 'data').iterdir()))} shards")
    timings = {"arrow": [], "parquet": [], "hub": []}
    with HubServer() as server, huggingface_hub_pointed_at(server, root / "cache"):
        api = HfApi(endpoint=server.url, token=server.token)
        api.create_repo("bench/corpus", repo_type="dataset")
        api.upload_folder(folder_path=str(root / "shards"), repo_id="bench/corpus", repo_type="dataset")
        for _ in range(args.rounds):
            arrow = load_from_disk(str(root / "arrow")).with_format("numpy")
            start = time.perf_counter()
            assert read_all(arrow[i] for i in range(len(arrow))) == args.rows
            timings["arrow"].append(time.perf_counter() - start)
            start = time.perf_counter()
            assert read_all(open_parquet_shards(root / "shards")) == args.rows
            timings["parquet"].append(time.perf_counter() - start)
            shutil.rmtree(root / "cache" / "hub", ignore_errors=True)
            start = time.perf_counter()
            assert read_all(open_parquet_shards("hf://datasets/bench/corpus")) == args.rows
            timings["hub"].append(time.perf_counter() - start)
    base = args.rows / statistics.median(timings["arrow"])
    for name, seconds in timings.items():
        rate = args.rows / statistics.median(seconds)
        print(f"{name:8s} {rate:9.1f} samples/s  ({rate / base:.2f}x local Arrow)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
