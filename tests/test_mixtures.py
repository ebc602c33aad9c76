"""Weighted dataset mixtures in ``fourm-hf train``: proportions, determinism, a text-only dataset, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from transformers import TrainerCallback

from fourm_hf import FourMModel
from fourm_hf.cli import main as cli_main
from fourm_hf.data.masking.mixture_collator import DATASET_INDEX_FIELD
from fourm_hf.data.mixture import ArrowSource, MixtureStream, mixture_dataset
from fourm_hf.data.parquet_shards import write_parquet_shards
from fourm_hf.training.pretrain import build_model_config, build_trainer, random_corpus

from test_training import TINY_MODEL, tiny_settings

torch.set_num_threads(1)
TEXT_MASKING = {"strategy": "all2all", "input_budget": 4, "target_budget": 4}


@pytest.fixture(scope="module")
def config():
    return build_model_config(TINY_MODEL, {"input_budget": 24, "target_budget": 24})


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, config):
    """An image corpus (every modality, Arrow folder) and a text-only one (caption only, Parquet shards)."""
    root = tmp_path_factory.mktemp("corpora")
    random_corpus(config, 16, seed=0).save_to_disk(str(root / "images"))
    write_parquet_shards(random_corpus(config, 12, seed=1).select_columns(["caption"]), root / "text", shard_size=4)
    return root


def mixture_settings(out, corpora, **training):
    settings = tiny_settings(out, **{"max_steps": 4, "per_device_train_batch_size": 4, **training})
    settings["data"]["train"] = [
        {"name": "images", "path": str(corpora / "images"), "weight": 3},
        {"name": "text", "path": str(corpora / "text"), "modalities": ["caption"], "weight": 1, "masking": dict(TEXT_MASKING)},
    ]
    return settings


# ---- sampling ------------------------------------------------------------------------------------------
def _stream(seed: int) -> MixtureStream:
    sources = [ArrowSource([{"row": i} for i in range(size)]) for size in (7, 5, 3)]
    return MixtureStream(sources, [0.6, 0.2, 0.2], ["cc12m", "coyo", "c4"], seed=seed)


def _draws(stream: MixtureStream, count: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
    iterator = stream.iterate(rank, world_size)
    return [(s[DATASET_INDEX_FIELD], s["row"]) for s in (next(iterator) for _ in range(count))]


def test_dataset_proportions_match_the_weights_and_repeat_for_a_seed():
    from scipy.stats import chisquare

    draws = _draws(_stream(seed=3), 2000)
    observed = np.bincount([k for k, _ in draws], minlength=3)
    assert chisquare(observed, f_exp=2000 * np.array([0.6, 0.2, 0.2])).pvalue > 0.01
    assert _draws(_stream(seed=3), 2000) == draws
    assert _draws(_stream(seed=4), 200) != draws[:200]


def test_each_dataset_is_read_in_passes_and_ranks_read_disjoint_parts():
    draws = _draws(_stream(seed=0), 300)
    rows_of_c4 = [row for k, row in draws if k == 2]
    for start in range(0, len(rows_of_c4) - 2, 3):  # every pass visits the 3 rows once, in its own order
        assert sorted(rows_of_c4[start:start + 3]) == [0, 1, 2]
    seen = [{row for k, row in _draws(_stream(seed=0), 200, rank, 2) if k == 0} for rank in (0, 1)]
    assert seen[0] == {0, 1, 2} and seen[1] == {3, 4, 5, 6}
    samples = [next(_stream(0).iterate(rank, 2))["sample_index"] for rank in (0, 1)]
    assert samples == [0, 1]
    two_ranks = mixture_dataset(_stream(0), world_size=2)
    assert two_ranks.n_shards == 2 and next(iter(two_ranks.shard(2, 1)))["sample_index"] == 1


# ---- training ------------------------------------------------------------------------------------------
def test_text_only_dataset_beside_images_trains_with_the_trainer(tmp_path, corpora, config):
    trainer = build_trainer(mixture_settings(tmp_path / "out", corpora, logging_steps=1))
    samples = list(zip(range(40), iter(trainer.train_dataset)))
    texts = [sample for _, sample in samples if sample[DATASET_INDEX_FIELD] == 1]
    assert texts and all(set(text) == {"caption", "sample_index", DATASET_INDEX_FIELD} for text in texts)
    batch = trainer.data_collator(texts)
    caption = config.modality_id("caption")
    assert set(batch["input_modality_ids"][batch["attention_mask"].bool()].tolist()) == {caption}
    assert set(batch["decoder_modality_ids"][batch["decoder_attention_mask"].bool()].tolist()) == {caption}
    assert batch["input_ids"].shape[1] == 24 and int(batch["attention_mask"].sum(1).max()) <= 4  # own budget, padded

    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert any("loss_caption" in entry for entry in trainer.state.log_history)


class SimulatedKill(Exception):
    pass


class KillAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedKill(f"killed after step {self.step}")


class RecordSamples:
    """Wraps the collator; records the (dataset, sample) of every sample it masks."""

    def __init__(self, collator, seen: list):
        self.collator, self.seen = collator, seen

    def __getattr__(self, name):
        return getattr(self.collator, name)

    def __call__(self, samples):
        self.seen.extend((int(s[DATASET_INDEX_FIELD]), int(s["sample_index"])) for s in samples)
        return self.collator(samples)


def test_resume_continues_mid_stream_at_the_same_sample(tmp_path, corpora, config):
    init = tmp_path / "init"
    FourMModel(config).save_pretrained(init)

    def run(out, kill_after=None, resume=None):
        settings = mixture_settings(out, corpora, max_steps=6, save_strategy="steps", save_steps=3, learning_rate=2e-3,
                                    data_seed=5)
        settings["model"] = {"pretrained": str(init)}
        trainer = build_trainer(settings)
        seen = []
        trainer.data_collator = RecordSamples(trainer.data_collator, seen)
        if kill_after is not None:
            trainer.add_callback(KillAfter(kill_after))
            with pytest.raises(SimulatedKill):
                trainer.train()
        else:
            trainer.train(resume_from_checkpoint=resume)
        return trainer, seen

    straight, seen_straight = run(tmp_path / "a")
    _, seen_first = run(tmp_path / "b", kill_after=3)
    resumed, seen_resumed = run(tmp_path / "b", resume=True)
    # accelerate's loader collates one batch ahead; the resumed run re-reads (and skips) the first 3 batches
    trained = seen_first[:12] + seen_resumed[12:24]
    assert trained == seen_straight[:24] and len({k for k, _ in seen_straight}) == 2
    expected = dict(straight.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name


# ---- bad input, before training ------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (lambda d: d[0].update(weights=2), r"Unknown key\(s\) \['weights'\] in data.train\[0\]"),
    (lambda d: d[1].update(weight=0), r"data.train\[1\] \(text\): weight must be a finite number > 0, got 0"),
    (lambda d: d[1].update(weight=-1.5), "weight must be a finite number > 0, got -1.5"),
    (lambda d: d[0].update(weight="heavy"), "weight must be a finite number > 0, got 'heavy'"),
    (lambda d: d[0].update(modalities=["rgb", "tok_rgb"]), r"the model trains \['tok_depth'.* but no dataset declares"),
    (lambda d: d[1].update(modalities=["caption", "tok_edges"]), "modality 'tok_edges' is not among the model's"),
    (lambda d: d[1].update(modalities=["caption", "det"]), "shard .*train-00000-of-00003.parquet has no column 'det' for "
                                                           "modality 'det', which the dataset declares"),
    (lambda d: d[1].update(masking={"input_budget": 40}), r"text.*masking.input_budget 40 is larger than the global"),
    (lambda d: d[1].update(masking={"strategi": "all2all"}), r"Unknown key\(s\) \['strategi'\] in data.train\[1\]"),
    (lambda d: d[0].update(path="/nowhere/corpus"), "'/nowhere/corpus' does not exist"),
    (lambda d: d.clear(), "data.train is an empty list"),
])
def test_bad_mixtures_are_named_errors(tmp_path, corpora, change, message):
    settings = mixture_settings(tmp_path / "out", corpora)
    change(settings["data"]["train"])
    with pytest.raises(ValueError, match=message):
        build_trainer(settings)


def test_arrow_dataset_missing_a_declared_modality_and_mixture_only_settings(tmp_path, corpora, config):
    random_corpus(config, 4, seed=2).remove_columns("tok_clip").save_to_disk(str(tmp_path / "no_clip"))
    settings = mixture_settings(tmp_path / "out", corpora)
    settings["data"]["train"][0]["path"] = str(tmp_path / "no_clip")
    with pytest.raises(ValueError, match=r"data.train\[0\] \(images\): .*no_clip has no column 'tok_clip'"):
        build_trainer(settings)
    with pytest.raises(ValueError, match="set training.max_steps"):
        build_trainer(mixture_settings(tmp_path / "out", corpora, max_steps=-1))
    settings = mixture_settings(tmp_path / "out", corpora)
    settings["data"]["repeat_sampling"] = 2
    with pytest.raises(ValueError, match="data.repeat_sampling does not apply to a mixture"):
        build_trainer(settings)


def test_cli_prints_a_bad_weight_as_one_line(tmp_path, corpora, capsys):
    settings = mixture_settings(str(tmp_path / "out"), corpora)
    settings["data"]["train"][1]["weight"] = 0
    path = tmp_path / "mixture.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert cli_main(["train", "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fourm-hf train: data.train[1] (text): weight must be") and "\n" not in error
