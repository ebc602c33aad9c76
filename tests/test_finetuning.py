"""Fine-tuning: task heads with the real Trainer, modality subsets, new modalities with a frozen-trunk warm-up, LoRA."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    Trainer,
    TrainingArguments,
)

from fourm_hf import (
    FourMForDepthEstimation,
    FourMForImageClassification,
    FourMForSemanticSegmentation,
    FourMMaskingCollator,
    FourMModel,
    ModalitySpec,
    register_modality,
    with_sample_index,
)
from fourm_hf.data.scenes import SCENE_CLASSES, SKY_DEPTH, render_scene
from fourm_hf.modeling.modeling_fourm_heads import scale_invariant_log_loss
from fourm_hf.testing_utils import random_packed_batch, tiny_config
from fourm_hf.training.finetune import (
    add_modalities,
    freeze_trunk,
    lora_config_for,
    modality_parameter_names,
    restrict_modalities,
    unfreeze,
)
from fourm_hf.training.pretrain import random_corpus
from fourm_hf.training.trainer import FourMTrainer

from conftest import subprocess_env

torch.set_num_threads(1)

QUIET = dict(report_to=[], disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False, save_strategy="no",
             use_cpu=True, seed=0, logging_steps=1)
EDGES = ModalitySpec("tok_edges", "image_tokens", vocab_size=16, num_channels=1, tokenizer="vqvae", target="edges")


def seeded_model(config, seed: int = 0) -> FourMModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FourMModel(config).eval()


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory):
    """A saved tiny FourMModel (random weights stand in for a pretrained checkpoint)."""
    folder = tmp_path_factory.mktemp("fourm")
    seeded_model(tiny_config()).save_pretrained(folder)
    return folder


def args(tmp_path, **overrides) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), **{**QUIET, **overrides})


def state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# ---- task heads ----------------------------------------------------------------------------------------
def colour_dataset(count: int, seed: int) -> list[dict]:
    """32 px noise images where one colour channel dominates; the label is that channel."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        label = int(rng.integers(0, 3))
        image = rng.uniform(-1.0, 0.2, (3, 32, 32)).astype(np.float32)
        image[label] += 0.8
        samples.append({"pixel_values": torch.from_numpy(image), "labels": torch.tensor(label)})
    return samples


def scene_dataset(count: int, task: str) -> list[dict]:
    """Rendered 32 px scenes: normalised RGB, and depth (sky = 0, i.e. no label) or semantic classes."""
    samples = []
    for seed in range(count):
        scene = render_scene(seed, 32)
        pixels = torch.from_numpy(scene["rgb"]).permute(2, 0, 1).float() / 127.5 - 1.0
        if task == "depth":
            labels = torch.from_numpy(np.where(scene["depth"] >= SKY_DEPTH, 0.0, scene["depth"]).astype(np.float32))
        else:
            labels = torch.from_numpy(scene["semseg"].astype(np.int64))
        samples.append({"pixel_values": pixels, "labels": labels})
    return samples


def test_classifier_takes_its_trunk_from_the_checkpoint(pretrained_folder):
    fourm = FourMModel.from_pretrained(pretrained_folder).eval()
    classifier = FourMForImageClassification.from_pretrained(pretrained_folder, num_labels=3).eval()
    fresh = FourMForImageClassification(tiny_config(num_labels=3))
    checkpoint = fourm.state_dict()
    trunk = {name.removeprefix("fourm."): t for name, t in classifier.state_dict().items() if name.startswith("fourm.")}
    assert len(trunk) == 2 + 2 * 7 + 1  # rgb proj + mod_emb, 2 blocks x 7 tensors, encoder norm
    for name, tensor in trunk.items():
        assert torch.equal(tensor, checkpoint[name]), name
    assert not torch.equal(fresh.fourm.encoder[0].attn.qkv.weight, checkpoint["encoder.0.attn.qkv.weight"])
    assert classifier.classifier.weight.shape == (3, 64) and torch.all(classifier.classifier.bias == 0)
    # the trunk computes exactly FourMModel's encoder on the full patch grid
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cells = fourm.config.grid_size**2
    rgb = torch.full((2, cells), fourm.config.modality_id("rgb"))
    with torch.no_grad():
        expected = fourm.get_encoder_features(torch.zeros_like(rgb), rgb, torch.arange(cells).expand(2, -1), pixel_values=pixels)
        features = classifier.fourm(pixels).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_classifier_learns_with_trainer_and_reloads_with_auto(tmp_path, pretrained_folder):
    id2label = {0: "red", 1: "green", 2: "blue"}
    model = FourMForImageClassification.from_pretrained(
        pretrained_folder, num_labels=3, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    train, heldout = colour_dataset(96, seed=0), colour_dataset(24, seed=1)
    trainer = Trainer(model=model, args=args(tmp_path / "run", max_steps=30, per_device_train_batch_size=16,
                                             learning_rate=3e-3, warmup_steps=3), train_dataset=train, eval_dataset=heldout)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.5 * before, (before, after)

    model.save_pretrained(tmp_path / "classifier")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "classifier").eval()
    assert isinstance(reloaded, FourMForImageClassification) and reloaded.config.id2label == id2label
    assert reloaded.config.auto_map["AutoModelForImageClassification"] == "modeling_fourm_heads.FourMForImageClassification"
    assert (tmp_path / "classifier" / "modeling_fourm_heads.py").is_file()
    batch = torch.stack([sample["pixel_values"] for sample in heldout])
    with torch.no_grad():
        logits = reloaded(batch).logits
        assert torch.equal(logits, model.eval()(batch).logits)
    labels = torch.stack([sample["labels"] for sample in heldout])
    assert (logits.argmax(-1) == labels).float().mean() > 0.8



@pytest.mark.slow  # a fresh interpreter importing transformers: ~20 s on a loaded 2-core machine
def test_saved_head_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = FourMForSemanticSegmentation(tiny_config(num_labels=4)).eval()
    model.save_pretrained(tmp_path / "head")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(pixels, tmp_path / "pixels.pt")
    code = (
        "import sys, torch; sys.modules['fourm_hf'] = None  # make the package unimportable\n"
        "from transformers import AutoModelForSemanticSegmentation as Auto\n"
        f"m = Auto.from_pretrained({str(tmp_path / 'head')!r}, trust_remote_code=True).eval()\n"
        "assert 'transformers_modules' in type(m).__module__, type(m).__module__\n"
        f"torch.save(m(torch.load({str(tmp_path / 'pixels.pt')!r})).logits, {str(tmp_path / 'remote.pt')!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), model(pixels).logits, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("task", ["depth", "semseg"])
def test_dense_heads_learn_rendered_scenes(tmp_path, pretrained_folder, task):
    if task == "depth":
        model = FourMForDepthEstimation.from_pretrained(pretrained_folder)
        auto_class = AutoModelForDepthEstimation
    else:
        names = dict(enumerate(SCENE_CLASSES))
        model = FourMForSemanticSegmentation.from_pretrained(pretrained_folder, num_labels=len(SCENE_CLASSES), id2label=names)
        auto_class = AutoModelForSemanticSegmentation
    data = scene_dataset(32, task)
    trainer = Trainer(model=model, args=args(tmp_path / "run", max_steps=60, per_device_train_batch_size=8,
                                             learning_rate=1e-2, warmup_steps=5), train_dataset=data, eval_dataset=data)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.6 * before, (before, after)

    model.eval()
    pixels = torch.stack([sample["pixel_values"] for sample in data[:2]])
    with torch.no_grad():
        output = model(pixels)
    if task == "depth":
        assert output.predicted_depth.shape == (2, 32, 32)
    else:
        assert output.logits.shape == (2, len(SCENE_CLASSES), 32, 32)
    model.save_pretrained(tmp_path / task)
    reloaded = auto_class.from_pretrained(tmp_path / task).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        again = reloaded(pixels)
    assert torch.equal(again[0], output[0])


def test_depth_l1_ignores_unlabelled_pixels_and_silog_is_scale_invariant():
    model = FourMForDepthEstimation(tiny_config()).eval()
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prediction = model(pixels).predicted_depth
        labels = prediction + 2.0
        labels[:, :16] = 0.0  # no depth there
        assert model(pixels, labels=labels).loss.item() == pytest.approx(2.0, abs=1e-5)
    target = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    valid = torch.ones_like(target, dtype=torch.bool)
    assert scale_invariant_log_loss((3.0 * target).log(), target, valid, lam=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert scale_invariant_log_loss((3.0 * target).log(), target, valid, lam=0.0).item() == pytest.approx(np.log(3) ** 2, rel=1e-5)
    silog = FourMForDepthEstimation(tiny_config(depth_loss="silog")).eval()
    with torch.no_grad():
        output = silog(pixels, labels=torch.full((1, 32, 32), 2.0))
    assert output.loss.item() >= 0 and torch.all(output.predicted_depth > 0)


def test_heads_reject_bad_input():
    classifier = FourMForImageClassification(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match=r"pixel_values \(modality 'rgb'\) must have shape \(batch, 3, 32, 32\)"):
        classifier(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="floating point"):
        classifier(torch.zeros(2, 3, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        classifier(torch.zeros(2, 3, 32, 32), labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        classifier(torch.zeros(2, 3, 32, 32), labels=torch.tensor([[0, 1]]))
    segmenter = FourMForSemanticSegmentation(tiny_config(num_labels=4))
    bad = torch.zeros(1, 32, 32, dtype=torch.long)
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="ignore index 255"):
        segmenter(torch.zeros(1, 3, 32, 32), labels=bad)
    bad[0, 0, 0] = 255  # ignored pixels are fine
    assert torch.isfinite(segmenter(torch.zeros(1, 3, 32, 32), labels=bad).loss)
    depth = FourMForDepthEstimation(tiny_config())
    with pytest.raises(ValueError, match="Depth labels must be a float tensor of shape"):
        depth(torch.zeros(1, 3, 32, 32), labels=torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="depth_loss must be one of"):
        FourMForDepthEstimation(tiny_config(depth_loss="l2"))
    with pytest.raises(ValueError, match="exactly one 'pixels' modality"):
        FourMForImageClassification(tiny_config(input_modalities=["tok_rgb"], output_modalities=["tok_depth"]))


# ---- (a) a subset of modalities ------------------------------------------------------------------------
def test_restricted_model_computes_what_the_full_model_computes(tmp_path):
    full = seeded_model(tiny_config())
    before = state(full)
    model = restrict_modalities(seeded_model(tiny_config()), ["rgb", "tok_rgb", "caption"], ["tok_depth", "caption"])
    config = model.config
    assert config.input_modalities == ["rgb", "tok_rgb", "caption"] and config.output_modalities == ["tok_depth", "caption"]
    assert sorted(config.modality_specs) == ["caption", "rgb", "tok_depth", "tok_rgb"]
    for name, tensor in model.state_dict().items():
        # tok_depth is no longer an input: its decoder keeps the modality embedding it shared with the encoder
        source = "encoder_embeddings.tok_depth.mod_emb" if name == "decoder_embeddings.tok_depth.mod_emb" else name
        assert torch.equal(tensor, before[source]), name

    batch = random_packed_batch(config, batch_size=2, seed=3)
    as_full = dict(batch)  # the same tokens, with the full model's modality ids
    for key in ("input_modality_ids", "decoder_modality_ids"):
        remap = torch.tensor([full.config.modality_id(name) for name in config.modality_names])
        as_full[key] = remap[batch[key]]
    with torch.no_grad():
        restricted_out, full_out = model(**batch), full(**as_full)
    for name in config.output_modalities:
        torch.testing.assert_close(restricted_out.logits[name], full_out.logits[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(restricted_out.modality_losses[name], full_out.modality_losses[name])

    model.save_pretrained(tmp_path / "restricted")
    reloaded = FourMModel.from_pretrained(tmp_path / "restricted").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).loss, restricted_out.loss)
    collator = FourMMaskingCollator(config, input_budget=12, target_budget=12, strategy="all2all", num_sentinels=20)
    packed = collator(with_sample_index(random_corpus(tiny_config(), 2, seed=0)).select(range(2)).to_list())
    assert set(packed["decoder_modality_ids"][packed["decoder_attention_mask"].bool()].tolist()) <= {2, 3}

    with pytest.raises(ValueError, match=r"output_modalities \['det'\] are not output_modalities"):
        restrict_modalities(model, output_modalities=["det"])
    with pytest.raises(ValueError, match="keep at least one"):
        restrict_modalities(model, input_modalities=[])


# ---- (b) a new modality: frozen-trunk warm-up, then full training --------------------------------------
def test_new_modality_warm_up_then_full_training(tmp_path, pretrained_folder):
    register_modality(EDGES)
    model = FourMModel.from_pretrained(pretrained_folder)
    original = state(model)
    add_modalities(model, ["tok_edges"])
    config = model.config
    assert config.input_modalities[-1] == config.output_modalities[-1] == "tok_edges"
    assert config.modality("tok_edges") == EDGES
    new_names = modality_parameter_names(model, ["tok_edges"])
    assert sorted(new_names) == ["decoder_embeddings.tok_edges.to_logits.weight", "encoder_embeddings.tok_edges.mod_emb",
                                 "encoder_embeddings.tok_edges.token_emb.weight"]
    for name, tensor in original.items():  # adding touched nothing that existed
        assert torch.equal(model.state_dict()[name], tensor), name

    corpus = with_sample_index(random_corpus(config, 32, seed=0))
    collator = FourMMaskingCollator(config, strategy="all2all", num_sentinels=20)
    training = dict(per_device_train_batch_size=8, learning_rate=1e-2, weight_decay=0.05, remove_unused_columns=False)

    assert freeze_trunk(model, train=["tok_edges"]) == sorted(new_names)
    warm = state(model)
    FourMTrainer(model=model, args=args(tmp_path / "warm", max_steps=3, **training), data_collator=collator,
                 train_dataset=corpus).train()
    after_warm_up = state(model)
    for name, tensor in after_warm_up.items():
        if name in new_names:
            assert not torch.equal(tensor, warm[name]), f"{name} did not train in the warm-up"
        else:
            assert torch.equal(tensor, warm[name]), f"{name} changed while frozen"

    assert unfreeze(model) == len(list(model.parameters()))
    FourMTrainer(model=model, args=args(tmp_path / "full", max_steps=2, **training), data_collator=collator,
                 train_dataset=corpus).train()
    for name in ("encoder.0.attn.qkv.weight", "decoder.1.mlp.fc2.weight", "encoder_embeddings.tok_rgb.token_emb.weight"):
        assert not torch.equal(model.state_dict()[name], after_warm_up[name]), f"{name} did not train"

    model.save_pretrained(tmp_path / "with_edges")
    reloaded = FourMModel.from_pretrained(tmp_path / "with_edges").eval()
    assert reloaded.config.modality("tok_edges") == EDGES
    batch = collator(corpus.select(range(4)).to_list())
    assert (batch["decoder_modality_ids"] == config.modality_id("tok_edges")).any()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).loss, model.eval()(**batch).loss)

    with pytest.raises(ValueError, match="'tok_edges' is already part of this model"):
        add_modalities(model, [EDGES])
    with pytest.raises(ValueError, match="'tok_edgs' is not part of this model"):
        freeze_trunk(model, train=["tok_edgs"])
    with pytest.raises(ValueError, match="'pix2' is raw pixels and can only be an input"):
        add_modalities(model, [ModalitySpec("pix2", "pixels", num_channels=1)], outputs=["pix2"])
    assert "pix2" not in model.config.modality_specs  # a rejected call changes nothing


# ---- (d) LoRA ------------------------------------------------------------------------------------------
PEFT_HINT = "peft is not installed (pip install -e .[peft])"
def test_lora_trains_only_adapters_and_reloads(tmp_path, pretrained_folder):
    pytest.importorskip("peft", reason=PEFT_HINT)
    from peft import PeftModel, get_peft_model

    base = FourMModel.from_pretrained(pretrained_folder)
    original = state(base)
    lora = get_peft_model(base, lora_config_for(base, r=4))
    adapted = sorted({name.split(".lora_")[0] for name, _ in lora.named_parameters() if ".lora_" in name})
    assert len(adapted) == 2 * (2 + 3) + 2 * (2 + 3 + 3)  # encoder: qkv, proj, 3 MLP; decoder: + q, kv, proj of cross-attn
    assert not any("embeddings" in name or "proj_context" in name for name in adapted)

    corpus = with_sample_index(random_corpus(base.config, 16, seed=0))
    collator = FourMMaskingCollator(base.config, strategy="all2all", num_sentinels=20)
    FourMTrainer(model=lora, args=args(tmp_path / "lora", max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
                                       remove_unused_columns=False), data_collator=collator, train_dataset=corpus).train()
    trained = {name.replace("base_model.model.", "").replace(".base_layer", ""): t for name, t in lora.state_dict().items()}
    for name, tensor in original.items():
        assert torch.equal(trained[name], tensor), f"{name} changed under LoRA"
    assert any(not torch.all(t == 0) for name, t in lora.state_dict().items() if "lora_B" in name)

    batch = collator(corpus.select(range(4)).to_list())
    lora.eval()
    with torch.no_grad():
        expected = lora(**batch)
    lora.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(FourMModel.from_pretrained(pretrained_folder), tmp_path / "adapter").eval()
    with torch.no_grad():
        again = reloaded(**batch)
        assert torch.equal(again.loss, expected.loss)
        assert not torch.allclose(FourMModel.from_pretrained(pretrained_folder).eval()(**batch).loss, expected.loss)
        merged = reloaded.merge_and_unload()
        assert type(merged) is FourMModel
        merged_out = merged(**batch)
    torch.testing.assert_close(merged_out.loss, expected.loss, atol=1e-5, rtol=1e-5)
    for name in expected.logits:
        torch.testing.assert_close(merged_out.logits[name], expected.logits[name], atol=1e-4, rtol=1e-4)


def test_lora_config_for_a_task_head_trains_the_head_fully():
    pytest.importorskip("peft", reason=PEFT_HINT)
    from peft import get_peft_model

    classifier = FourMForImageClassification(tiny_config(num_labels=3))
    config = lora_config_for(classifier, r=2)
    assert sorted(config.modules_to_save) == ["classifier", "pool_norm"] and config.lora_alpha == 4
    wrapped = get_peft_model(classifier, config)
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    assert sum(".lora_A." in name for name in trainable) == 2 * 5  # encoder blocks only: qkv, proj, fc1-3
    assert any("classifier.modules_to_save" in name for name in trainable)
    assert not any("encoder_embeddings" in name for name in trainable)
    with pytest.raises(ValueError, match="r must be >= 1"):
        lora_config_for(classifier, r=0)
