"""``fourm-hf write-shards``: a save_to_disk folder -> resumable Parquet shards, its options and its one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, List, Value

from fourm_hf.cli import main as cli_main
from fourm_hf.data.parquet_shards import open_parquet_shards, shard_files, write_parquet_shards

ROWS = 10


def corpus(rows: int = ROWS) -> Dataset:
    """Captions whose first id names the row, beside a token grid and a string column."""
    features = Features({"caption": List(Value("int32")), "tok_rgb": List(Value("int32"), length=4),
                         "note": Value("string")})
    return Dataset.from_dict({"caption": [[row, 7, 3] for row in range(rows)],
                              "tok_rgb": [[row] * 4 for row in range(rows)],
                              "note": [f"row {row}" for row in range(rows)]}, features=features)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("fourm-hf write-shards: error: ") and "\n" not in err, err
    return err


@pytest.fixture
def saved(tmp_path) -> Path:
    corpus().save_to_disk(str(tmp_path / "corpus"))
    (tmp_path / "corpus" / "corpus_info.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    return tmp_path / "corpus"


def test_writes_shards_and_resumes_an_interrupted_run(tmp_path, saved, capsys):
    assert cli_main(["write-shards", "--dataset", str(saved), "--out", str(tmp_path / "straight"), "--shard-size", "4"]) == 0
    assert "wrote 10 rows as 3 Parquet shards" in capsys.readouterr().out
    assert (tmp_path / "straight" / "corpus_info.json").read_text() == (saved / "corpus_info.json").read_text()
    rows = list(open_parquet_shards(tmp_path / "straight", training_format=False))
    assert [int(row["caption"][0]) for row in rows] == list(range(ROWS)) and rows[3]["note"] == "row 3"

    with pytest.raises(KeyboardInterrupt):  # a run stopped after one of its three shards
        write_parquet_shards(saved, tmp_path / "resumed", shard_size=4, _stop_after_shards=1)
    written = sorted((tmp_path / "resumed" / "data").glob("*.parquet"))
    assert len(written) == 1
    stamp = written[0].stat().st_mtime_ns
    assert cli_main(["write-shards", "--dataset", str(saved), "--out", str(tmp_path / "resumed"), "--shard-size", "4"]) == 0
    assert written[0].stat().st_mtime_ns == stamp  # the finished shard is kept, not rewritten
    for resumed, straight in zip(shard_files(tmp_path / "resumed"), shard_files(tmp_path / "straight"), strict=True):
        assert Path(resumed).read_bytes() == Path(straight).read_bytes()
    assert cli_main(["write-shards", "--dataset", str(saved), "--out", str(tmp_path / "resumed"), "--shard-size", "4"]) == 0


def test_columns_make_a_text_only_dataset_and_splits_are_read(tmp_path, saved, capsys):
    out = tmp_path / "captions"
    assert cli_main(["write-shards", "--dataset", str(saved), "--out", str(out), "--columns", "caption"]) == 0
    assert "columns ['caption']" in capsys.readouterr().out
    rows = list(open_parquet_shards(out, training_format=False))
    assert set(rows[0]) == {"caption"} and len(rows) == ROWS and rows[0]["caption"].dtype == np.int64

    DatasetDict({"train": corpus(), "validation": corpus(3)}).save_to_disk(str(tmp_path / "dict"))
    out = tmp_path / "validation"
    assert cli_main(["write-shards", "--dataset", str(tmp_path / "dict"), "--split", "validation", "--out", str(out)]) == 0
    assert [Path(name).name for name in shard_files(out)] == ["validation-00000-of-00001.parquet"]
    assert len(list(open_parquet_shards(out, training_format=False))) == 3


@pytest.mark.parametrize("first, second, differing", [
    (["--shard-size", "5"], ["--shard-size", "6"], "['shard_size']"),
    (["--shard-size", "4"], ["--shard-size", "4", "--columns", "caption"], "['columns']"),
])
def test_a_rerun_with_other_options_is_refused(tmp_path, saved, capsys, first, second, differing):
    out = ["--dataset", str(saved), "--out", str(tmp_path / "shards")]
    assert cli_main(["write-shards", *out, *first]) == 0
    capsys.readouterr()
    assert cli_main(["write-shards", *out, *second]) == 2
    assert f"written with other {differing}" in one_line_error(capsys)


def test_bad_input_is_one_line_with_exit_2(tmp_path, saved, capsys):
    cases = [
        (["--dataset", str(tmp_path / "missing")], r"--dataset .*missing: not a folder; expected a folder saved with datasets.save_to_disk"),
        (["--dataset", str(tmp_path)], r"neither a .*Dataset.* directory nor a .*DatasetDict"),
        (["--dataset", str(saved), "--shard-size", "0"], r"shard_size must be an int >= 1, got 0"),
        (["--dataset", str(saved), "--columns", "caption", "depth"], r"has no column \['depth'\]; its columns are \['caption', 'note', 'tok_rgb'\]"),
        (["--dataset", str(saved), "--columns", "caption", "caption"], r"each once"),
        (["--dataset", str(saved), "--split", "test"], None),  # a plain dataset folder has no splits: the split only names files
    ]
    for arguments, message in cases:
        out = tmp_path / "out"
        status = cli_main(["write-shards", *arguments, "--out", str(out)])
        if message is None:
            assert status == 0 and [Path(n).name for n in shard_files(out)] == ["test-00000-of-00001.parquet"]
            capsys.readouterr()
            continue
        assert status == 2, arguments
        assert re.search(message, one_line_error(capsys)), arguments
        assert not out.exists()
    DatasetDict({"train": corpus()}).save_to_disk(str(tmp_path / "dict"))
    capsys.readouterr()
    assert cli_main(["write-shards", "--dataset", str(tmp_path / "dict"), "--split", "test", "--out", str(tmp_path / "x")]) == 2
    assert "no split 'test'; splits are ['train']" in one_line_error(capsys)
    (tmp_path / "file").write_text("not a folder")
    assert cli_main(["write-shards", "--dataset", str(saved), "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in one_line_error(capsys)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("mine")
    assert cli_main(["write-shards", "--dataset", str(saved), "--out", str(tmp_path / "busy")]) == 2
    assert "holds no parquet_shards.json; choose an empty or new folder" in one_line_error(capsys)
