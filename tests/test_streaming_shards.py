"""Parquet shards: resumable writing, streaming from a folder and from the loopback Hub, each DDP rank its own shards.

The two-process test launches this file under ``torchrun --nproc_per_node 2``: each rank trains 2
steps of ``fourm-hf train``'s Trainer on a mixture of one streamed dataset (4 shards) and records the
captions it masked, which name their row.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, List, Value

from fourm_hf.data.parquet_shards import open_parquet_shards, shard_columns, shard_files, write_parquet_shards

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer, huggingface_hub_pointed_at  # noqa: E402

torch.set_num_threads(1)
ROWS = 16


def numbered_captions(rows: int = ROWS) -> Dataset:
    """Captions whose first id names the row (10 + row), for tracing which rows a reader saw."""
    captions = [[10 + row, 30 + row % 5, 31, 32, 33, 3] for row in range(rows)]
    tokens = [list(range(16)) for _ in range(rows)]
    features = Features({"caption": List(Value("int32")), "tok_rgb": List(Value("int32"), length=16)})
    return Dataset.from_dict({"caption": captions, "tok_rgb": tokens}, features=features)


def rows_of(samples) -> list[int]:
    return [int(np.asarray(sample["caption"])[0]) - 10 for sample in samples]


def test_write_kill_resume_and_read_back(tmp_path):
    dataset = numbered_captions()
    with pytest.raises(KeyboardInterrupt):
        write_parquet_shards(dataset, tmp_path / "killed", shard_size=5, _stop_after_shards=2)
    assert len(list((tmp_path / "killed" / "data").glob("*.parquet"))) == 2
    with pytest.raises(ValueError, match="2 of 4 shards are missing"):
        shard_files(tmp_path / "killed")
    write_parquet_shards(dataset, tmp_path / "killed", shard_size=5)
    write_parquet_shards(dataset, tmp_path / "straight", shard_size=5)
    for killed, straight in zip(shard_files(tmp_path / "killed"), shard_files(tmp_path / "straight")):
        assert Path(killed).name == Path(straight).name and Path(killed).read_bytes() == Path(straight).read_bytes()
    assert [Path(f).name for f in shard_files(tmp_path / "straight")][-1] == "train-00003-of-00004.parquet"

    stream = open_parquet_shards(tmp_path / "straight")
    assert stream.n_shards == 4 and rows_of(stream) == list(range(ROWS))
    first = next(iter(stream))
    assert first["tok_rgb"].dtype == np.int64 and first["tok_rgb"].shape == (16,)  # features kept in the schema
    assert set(next(iter(open_parquet_shards(tmp_path / "straight", columns=["caption"])))) == {"caption"}
    assert all(columns == ["caption", "tok_rgb"] for columns in shard_columns(tmp_path / "straight").values())


def test_writing_refuses_other_arguments_and_bad_input(tmp_path):
    write_parquet_shards(numbered_captions(), tmp_path / "shards", shard_size=5)
    with pytest.raises(ValueError, match=r"other \['num_shards', 'shard_size'\]"):
        write_parquet_shards(numbered_captions(), tmp_path / "shards", shard_size=8)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no parquet_shards.json"):
        write_parquet_shards(numbered_captions(), tmp_path / "other")
    with pytest.raises(ValueError, match="shard_size must be an int >= 1"):
        write_parquet_shards(numbered_captions(), tmp_path / "new", shard_size=0)
    with pytest.raises(ValueError, match="is empty"):
        write_parquet_shards(numbered_captions().select([]), tmp_path / "new")
    with pytest.raises(ValueError, match="not a shards folder"):
        open_parquet_shards(tmp_path / "other")


def test_mixture_streams_shards_from_the_loopback_hub(tmp_path):
    from huggingface_hub import HfApi

    from fourm_hf.training.pretrain import build_model_config, build_trainer, random_corpus
    from test_mixtures import TEXT_MASKING
    from test_training import TINY_MODEL, tiny_settings

    write_parquet_shards(numbered_captions(), tmp_path / "text", shard_size=4)
    settings = tiny_settings(tmp_path / "out", max_steps=2, per_device_train_batch_size=4, logging_steps=1)
    with HubServer() as server, huggingface_hub_pointed_at(server, tmp_path / "cache"):
        api = HfApi(endpoint=server.url, token=server.token)
        api.create_repo("fourm-tester/captions", repo_type="dataset")
        api.upload_folder(folder_path=str(tmp_path / "text"), repo_id="fourm-tester/captions", repo_type="dataset")
        assert rows_of(open_parquet_shards("hf://datasets/fourm-tester/captions")) == list(range(ROWS))

        random_corpus(build_model_config(TINY_MODEL), 8, seed=0).save_to_disk(str(tmp_path / "images"))
        settings["data"]["train"] = [
            {"name": "images", "path": str(tmp_path / "images"), "weight": 1},
            {"name": "hub", "path": "hf://datasets/fourm-tester/captions", "modalities": ["caption"], "weight": 1,
             "masking": dict(TEXT_MASKING), "shuffle_buffer": 1},
        ]
        trainer = build_trainer(settings)
        trainer.train()
        assert trainer.state.global_step == 2
        streamed = [path for method, path in server.requests if path.startswith("/datasets/fourm-tester/captions/resolve")]
        assert any(path.endswith(".parquet") for path in streamed)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_read_their_own_shards(tmp_path):
    """Each rank streams only its own 2 of the 4 shards (disjoint shard sets), with sample indices rank + 2 i."""
    write_parquet_shards(numbered_captions(), tmp_path / "text", shard_size=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1", PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(tmp_path)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank, record in enumerate(seen):
        assert record["world_size"] == 2 and len(record["samples"]) >= 4
        assert all(index % 2 == rank for _, index in record["samples"])
    shards = [{row // 4 for row, _ in record["samples"]} for record in seen]  # 4 rows per shard
    assert shards[0] and shards[1] and not shards[0] & shards[1]  # datasets deals rank 0 shards 0, 2 and rank 1 shards 1, 3


def _worker(root: str):
    from fourm_hf.training.pretrain import build_trainer
    from test_mixtures import TEXT_MASKING
    from test_training import TINY_MODEL, tiny_settings

    root = Path(root)
    settings = tiny_settings(root / "out", max_steps=2, per_device_train_batch_size=2)
    names = ["tok_rgb", "caption"]
    settings["model"] = {**TINY_MODEL, "input_modalities": names, "output_modalities": names,
                         "vocab_sizes": {name: TINY_MODEL["vocab_sizes"][name] for name in names}, "max_lengths": {"caption": 24}}
    settings["masking"] = {**settings["masking"], **TEXT_MASKING}
    settings["data"]["train"] = [{"name": "text", "path": str(root / "text"), "shuffle_buffer": 1}]
    trainer = build_trainer(settings)
    samples, collator = [], trainer.data_collator

    def recording(batch):
        samples.extend((int(s["caption"][0]) - 10, int(s["sample_index"])) for s in batch)
        return collator(batch)

    trainer.data_collator = recording
    trainer.train()
    rank = trainer.args.process_index
    (root / f"rank{rank}.json").write_text(json.dumps({"world_size": trainer.args.world_size, "samples": samples}))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
