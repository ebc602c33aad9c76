"""FourMModel reproduces the reference 4M implementation on its stored fixtures.

Every FM fixture set in ``$FOURM_ML4M_FIXTURES`` (default ../shared/fixtures/ml4m) is discovered: a
top-level ``<name>_reference.json`` (+ ``.safetensors``, ``_io.safetensors``; the 4M-7 layout) or a
folder ``<name>/`` in the released-Hub layout (``config.json``, ``model.safetensors``,
``<name>.json`` with an ``fm_config``, ``<name>_io.safetensors``; 4M-21, SR). For each: convert the
weights with our conversion code, run the stored batch in SDPA and eager mode, and compare masks and
indices exactly, hidden states and logits to 1e-4, losses to 1e-5 and the stored gradients to 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf.ml4m.conversion import load_reference_model, reference_batch_to_packed, reference_domain_to_modality

from conftest import SHARED_DIR, subprocess_env

FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m"))
ATOL_STATES, ATOL_LOSS, ATOL_GRAD = 1e-4, 1e-5, 1e-4


@dataclass
class FixtureSet:
    name: str
    meta_path: Path
    weights_path: Path
    io_path: Path
    config_path: Path | None  # the released config.json, when the set is in the Hub layout


def discover_fixture_sets(root: Path) -> list[FixtureSet]:
    """Top-level ``*_reference.json`` sets and every sub-folder holding an FM fixture in the Hub layout."""
    if not root.is_dir():
        return []
    sets = [FixtureSet(path.stem, path, path.with_suffix(".safetensors"), path.with_name(f"{path.stem}_io.safetensors"), None)
            for path in sorted(root.glob("*_reference.json"))]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        meta_path = folder / f"{folder.name}.json"
        if not (meta_path.is_file() and (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()):
            continue
        if "fm_config" not in json.loads(meta_path.read_text()):
            continue  # a tokenizer fixture
        sets.append(FixtureSet(folder.name, meta_path, folder / "model.safetensors",
                               folder / f"{folder.name}_io.safetensors", folder / "config.json"))
    return sets


FIXTURE_SETS = discover_fixture_sets(FIXTURE_DIR)


def _fixture_params():
    if not FIXTURE_SETS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no FM fixture sets in {FIXTURE_DIR} "
                                                                  "(set FOURM_ML4M_FIXTURES or provide ../shared)"))]
    return [pytest.param(fixture, id=fixture.name) for fixture in FIXTURE_SETS]


class ReferenceCase:
    """One fixture set: the converted model, the stored tensors and our packed version of the batch."""

    def __init__(self, fixture: FixtureSet):
        self.fixture = fixture
        self.meta = json.loads(fixture.meta_path.read_text())
        self.weights_path = fixture.weights_path
        self.io = load_file(str(fixture.io_path))
        self.model = load_reference_model(self.weights_path, fixture.config_path or self.meta["fm_config"])
        self.config = self.model.config
        batch = {}
        for key, value in self.io.items():
            if key.startswith("in."):
                domain, field = key[len("in."):].rsplit(".", 1)
                batch.setdefault(domain, {})[field] = value
        packed = reference_batch_to_packed(
            batch, self.config, self.meta["num_encoder_tokens"], self.meta["num_decoder_tokens"],
            self.meta["decoder_concat_order_used"],
        )
        self.encoder_gather_index = packed.pop("encoder_gather_index")
        self.decoder_gather_index = packed.pop("decoder_gather_index")
        self.inputs = packed
        self.domain_of = {self.modality(d): d for d in self.meta["modalities"]}
        # our modality index -> the reference's int16 modality id
        reference_ids = {self.modality(d): spec["id"] for d, spec in self.meta["modalities"].items()}
        self.reference_modality_id = torch.tensor([reference_ids[name] for name in self.config.modality_names])

    def modality(self, domain: str) -> str:
        return reference_domain_to_modality(domain, self.config.image_size)

    def our_parameter_name(self, reference_key: str) -> str:
        """Reference parameter name -> ours (a shared decoder modality embedding is the encoder's)."""
        parts = reference_key.split(".")
        if parts[0] in ("encoder_embeddings", "decoder_embeddings"):
            parts[1] = self.modality(parts[1])
            shared = self.config.share_modality_embeddings and parts[1] in self.config.input_modalities
            if parts[0] == "decoder_embeddings" and parts[2] == "mod_emb" and shared:
                parts[0] = "encoder_embeddings"
        return ".".join(parts)

    def reference_mod_mask(self, modality_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.where(valid.bool(), self.reference_modality_id[modality_ids], torch.tensor(-1)).to(torch.int16)

    def run(self, implementation: str):
        self.model.config._attn_implementation = implementation
        self.model.zero_grad()
        return self.model(**self.inputs, output_hidden_states=True)


@pytest.fixture(scope="module", params=_fixture_params())
def case(request) -> ReferenceCase:
    return ReferenceCase(request.param)


def test_encoder_selection_matches_exactly(case):
    io, inputs = case.io, case.inputs
    assert torch.equal(case.encoder_gather_index, io["enc.gather_index"])
    assert torch.equal(inputs["attention_mask"] == 0, io["enc.mask"])
    assert torch.equal(case.reference_mod_mask(inputs["input_modality_ids"], inputs["attention_mask"]), io["enc.mod_mask"])


def test_decoder_selection_and_attention_mask_match_exactly(case):
    io, inputs = case.io, case.inputs
    assert torch.equal(case.decoder_gather_index, io["dec.gather_index"])
    valid = inputs["decoder_attention_mask"].bool()
    assert torch.equal(~valid, io["dec.mask"])
    assert torch.equal(case.reference_mod_mask(inputs["decoder_modality_ids"], valid), io["dec.mod_mask"])
    assert torch.equal(inputs["labels"].masked_fill(~valid, 0), io["dec.target_ids"])
    allowed = case.model.decoder_self_attention_mask(inputs["decoder_modality_ids"], inputs["decoder_attention_mask"])
    # Rows of padding queries are irrelevant (the reference keeps their source modality; we have none).
    assert torch.equal((~allowed)[valid], io["dec.attn_mask"][valid])


def test_fixture_geometry_is_what_the_registry_says(case):
    """Each image domain's token count and each sequence's decoder position limit match the fixture table."""
    for domain, table in case.meta["modalities"].items():
        name = case.modality(domain)
        spec = case.config.modality(name)
        if table["type"] == "img":
            assert case.config.num_positions(name) == table["max_tokens"], domain
            assert spec.learned_positions == (table.get("pos_emb") == "learned parameter"), domain
        elif table["type"] == "seq":
            assert spec.decoder_position_limit == table.get("max_length_posemb", table["max_tokens"]), domain
            assert spec.max_length == table["max_tokens"], domain
        if table.get("vocab_size") is not None:
            assert spec.vocab_size == table["vocab_size"], domain
    assert sorted(case.config.output_modalities) == sorted(case.modality(d) for d in case.meta["decoder_modalities"])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_hidden_states_logits_and_losses_match(case, implementation):
    io, meta = case.io, case.meta
    with torch.no_grad():
        out = case.run(implementation)
        encoder_keys = ("input_ids", "input_modality_ids", "input_positions", "attention_mask", "pixel_values",
                        "continuous_inputs")
        encoded = case.model.encode(**{k: case.inputs[k] for k in encoder_keys if k in case.inputs})
        context = case.model.encoder_context(encoded)
    valid = case.inputs["decoder_attention_mask"].bool()
    torch.testing.assert_close(out.encoder_hidden_states[0], io["enc.input"], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(out.encoder_last_hidden_state, io["enc.output"], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(context, io["dec.context"], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(out.decoder_hidden_states[0][valid], io["dec.input"][valid], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(out.decoder_last_hidden_state[valid], io["dec.output"][valid], atol=ATOL_STATES, rtol=0)
    assert set(out.logits) == set(case.config.output_modalities)
    for name, logits in out.logits.items():
        domain = case.domain_of[name]
        torch.testing.assert_close(logits, io[f"out.logits.{domain}"], atol=ATOL_STATES, rtol=0)
        targets = case.inputs["labels"][(case.inputs["decoder_modality_ids"] == case.config.modality_id(name)) & valid]
        assert torch.equal(targets, io[f"out.targets.{domain}"])
        assert out.modality_losses[name].item() == pytest.approx(io[f"out.loss.{domain}"].item(), abs=ATOL_LOSS)
        assert out.modality_losses[name].item() == pytest.approx(meta["results"]["loss_per_modality"][domain], abs=ATOL_LOSS)
    assert out.loss.item() == pytest.approx(io["out.loss.total_mod"].item(), abs=ATOL_LOSS)
    assert out.loss.item() == pytest.approx(meta["results"]["loss_total_mod"], abs=ATOL_LOSS)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_gradients_match(case, implementation):
    out = case.run(implementation)
    out.loss.backward()
    parameters = dict(case.model.named_parameters())
    stored = {key[len("grad."):]: value for key, value in case.io.items() if key.startswith("grad.")}
    assert stored, "fixture has no stored gradients"
    for key, expected in stored.items():
        grad = parameters[case.our_parameter_name(key)].grad
        torch.testing.assert_close(grad.reshape(expected.shape), expected, atol=ATOL_GRAD, rtol=0)
    norms = case.meta["results"]["grad_l2_norm_per_param"]
    for key, expected_norm in norms.items():
        grad = parameters[case.our_parameter_name(key)].grad
        norm = 0.0 if grad is None else grad.norm().item()
        assert norm == pytest.approx(expected_norm, abs=ATOL_GRAD), key
    global_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in parameters.values() if p.grad is not None)).item()
    assert global_norm == pytest.approx(case.meta["results"]["grad_global_l2_norm"], abs=ATOL_GRAD)


def test_converted_checkpoint_loads_with_automodel(case, tmp_path):
    if case.fixture.config_path is not None:
        source = ["--checkpoint", str(case.fixture.config_path.parent)]  # the released folder as downloaded
    else:
        config_path = tmp_path / "reference_config.json"
        config_path.write_text(json.dumps(case.meta["fm_config"]))
        source = ["--checkpoint", str(case.weights_path), "--config", str(config_path)]
    output = tmp_path / "converted"
    command = [sys.executable, "-m", "fourm_hf.cli", "convert-ml4m", *source, "--output", str(output)]
    subprocess.run(command, check=True, env=subprocess_env(), capture_output=True)
    model = AutoModel.from_pretrained(output)
    with torch.no_grad():
        out = model(**case.inputs)
    assert out.loss.item() == pytest.approx(case.meta["results"]["loss_total_mod"], abs=ATOL_LOSS)
