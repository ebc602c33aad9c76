"""FourMModel reproduces the reference 4M implementation on its stored fixtures.

For every ``*_reference.json`` fixture set in ``$FOURM_ML4M_FIXTURES`` (default ../shared/fixtures/ml4m):
convert the weights with our conversion code, run the stored batch in SDPA and eager mode, and
compare masks and indices exactly, hidden states and logits to 1e-4, losses to 1e-5 and the stored
gradients to 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf.modeling.conversion import load_reference_model, reference_batch_to_packed, reference_domain_to_modality

from conftest import SHARED_DIR, subprocess_env

FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m"))
FIXTURE_SETS = sorted(FIXTURE_DIR.glob("*_reference.json")) if FIXTURE_DIR.is_dir() else []
ATOL_STATES, ATOL_LOSS, ATOL_GRAD = 1e-4, 1e-5, 1e-4


def _fixture_params():
    if not FIXTURE_SETS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no *_reference.json fixture sets in {FIXTURE_DIR} "
                                                                  "(set FOURM_ML4M_FIXTURES or provide ../shared)"))]
    return [pytest.param(path, id=path.stem) for path in FIXTURE_SETS]


class ReferenceCase:
    """One fixture set: the converted model, the stored tensors and our packed version of the batch."""

    def __init__(self, json_path: Path):
        self.meta = json.loads(json_path.read_text())
        stem = json_path.with_suffix("")
        self.weights_path = Path(f"{stem}.safetensors")
        self.io = load_file(f"{stem}_io.safetensors")
        self.model = load_reference_model(self.weights_path, self.meta["fm_config"])
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
        # our modality index -> the reference's int16 modality id
        reference_ids = {reference_domain_to_modality(d): spec["id"] for d, spec in self.meta["modalities"].items()}
        self.reference_modality_id = torch.tensor([reference_ids[name] for name in self.config.modality_names])
        self.domain_of = {reference_domain_to_modality(d): d for d in self.meta["modalities"]}

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


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_hidden_states_logits_and_losses_match(case, implementation):
    io, meta = case.io, case.meta
    with torch.no_grad():
        out = case.run(implementation)
        encoded = case.model.encode(**{k: case.inputs[k] for k in
                                       ("input_ids", "input_modality_ids", "input_positions", "attention_mask", "pixel_values")
                                       if k in case.inputs})
        context = case.model.encoder_context(encoded)
    valid = case.inputs["decoder_attention_mask"].bool()
    torch.testing.assert_close(out.encoder_hidden_states[0], io["enc.input"], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(out.encoder_last_hidden_state, io["enc.output"], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(context, io["dec.context"], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(out.decoder_hidden_states[0][valid], io["dec.input"][valid], atol=ATOL_STATES, rtol=0)
    torch.testing.assert_close(out.decoder_last_hidden_state[valid], io["dec.output"][valid], atol=ATOL_STATES, rtol=0)
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

    def our_name(reference_key: str) -> str:
        parts = reference_key.split(".")
        if parts[0] in ("encoder_embeddings", "decoder_embeddings"):
            parts[1] = reference_domain_to_modality(parts[1])
        return ".".join(parts)

    stored = {key[len("grad."):]: value for key, value in case.io.items() if key.startswith("grad.")}
    assert stored, "fixture has no stored gradients"
    for key, expected in stored.items():
        torch.testing.assert_close(parameters[our_name(key)].grad, expected, atol=ATOL_GRAD, rtol=0)
    norms = case.meta["results"]["grad_l2_norm_per_param"]
    for key, expected_norm in norms.items():
        grad = parameters[our_name(key)].grad
        norm = 0.0 if grad is None else grad.norm().item()
        assert norm == pytest.approx(expected_norm, abs=ATOL_GRAD), key
    global_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in parameters.values() if p.grad is not None)).item()
    assert global_norm == pytest.approx(case.meta["results"]["grad_global_l2_norm"], abs=ATOL_GRAD)


def test_converted_checkpoint_loads_with_automodel(case, tmp_path):
    config_path = tmp_path / "reference_config.json"
    config_path.write_text(json.dumps(case.meta["fm_config"]))
    output = tmp_path / "converted"
    command = [sys.executable, "-m", "fourm_hf.cli", "convert-ml4m", "--checkpoint", str(case.weights_path),
               "--config", str(config_path), "--output", str(output)]
    subprocess.run(command, check=True, env=subprocess_env(), capture_output=True)
    model = AutoModel.from_pretrained(output)
    with torch.no_grad():
        out = model(**case.inputs)
    assert out.loss.item() == pytest.approx(case.meta["results"]["loss_total_mod"], abs=ATOL_LOSS)
