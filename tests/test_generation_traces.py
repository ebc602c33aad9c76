"""Our sampler gives the reference sampler's tokens on its stored generation traces.

For every ``generation/<fixture>/*_generation.json`` under ``$FOURM_ML4M_FIXTURES`` (default
../shared/fixtures/ml4m; see its README section 16): convert the model the trace names with our
conversion, rebuild each trace's schedule with our planner and the reference's conventions
(``conventions="ml4m"``, ``encoder_order="schedule"``, per-step re-seeding), run ``generate`` at
temperature 0 (greedy) and compare every generated token. One test per trace, the fixture and
trace names in its id. Traces the JSON marks non-deterministic (sampled with torch's multinomial,
which our sampler does not use) are skipped with that reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fourm_hf.ml4m.conversion import load_reference_model, reference_domain_to_modality
from fourm_hf.modeling.generation import build_generation_schedule, generate, reveal_counts

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m"))
TRACE_FILES = sorted((FIXTURE_DIR / "generation").glob("*/*_generation.json"))


def _trace_params():
    if not TRACE_FILES:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no generation/*/*_generation.json under {FIXTURE_DIR}"))]
    params = []
    for path in TRACE_FILES:
        for trace in json.loads(path.read_text())["traces"]:
            params.append(pytest.param(path, trace, id=f"{path.parent.name}-{trace}"))
    return params


_MODELS: dict[Path, torch.nn.Module] = {}
_IO: dict[Path, dict[str, torch.Tensor]] = {}


def converted_model(trace_file: Path, meta: dict):
    """The model a trace file names, converted with our conversion (cached per file)."""
    if trace_file not in _MODELS:
        files = meta["model_files"]
        folder = (trace_file.parent / files["folder"]).resolve()
        fixture_json = json.loads((folder / files["json"]).read_text())
        reference_config = fixture_json.get("fm_config") or json.loads((folder / "config.json").read_text())
        try:
            _MODELS[trace_file] = load_reference_model(folder / files["weights"], reference_config).eval()
        except ValueError as error:  # a layout the conversion does not support yet (e.g. 4M-21 before issue 13's trunk work)
            pytest.xfail(f"the conversion refuses {folder.name}: {error}")
    return _MODELS[trace_file]


def trace_tensors(trace_file: Path) -> dict[str, torch.Tensor]:
    if trace_file not in _IO:
        _IO[trace_file] = load_file(str(trace_file.with_suffix(".safetensors")))
    return _IO[trace_file]


def reference_token_schedule(scheme: str, counts: list[int]) -> str:
    """Our name of the reference token schedule that gives these per-step counts."""
    candidates = ("ml4m_linear",) if scheme == "roar" else ("ml4m_cosine", "ml4m_linear")
    for name in candidates:
        if reveal_counts(sum(counts), len(counts), name) == counts:
            return name
    raise AssertionError(f"no reference token schedule {candidates} gives the trace's counts {counts}")


def plan_from_trace(model, trace: dict, tensors: dict[str, torch.Tensor], name: str) -> dict:
    """The trace's conditioning, targets and schedule as arguments of our planner and generate()."""
    config = model.config
    targets, steps = [], {}
    for entry in trace["schedule"]:
        target = reference_domain_to_modality(entry["target_domain"])
        if target not in steps:
            targets.append(target)
        steps.setdefault(target, []).append(entry)
    cond_domains = [reference_domain_to_modality(d) for d in trace["conditioning"]]
    tokens, pixel_values = {}, None
    for domain in trace["conditioning"]:
        modality = reference_domain_to_modality(domain)
        tensor = tensors[f"{name}.in.{domain}.tensor"]
        assert not tensors[f"{name}.in.{domain}.input_mask"].any(), f"{domain}: conditioning must be fully visible"
        if config.modality(modality).kind == "pixels":
            pixel_values = tensor.float()
        else:
            tokens[modality] = tensor.long()
    columns = {"tokens_per_target": [], "autoregression_schemes": [], "decoding_steps": [],
               "token_decoding_schedules": [], "temps": [], "greedy": [], "cfg_scales": []}
    for target in targets:
        entries = steps[target]
        scheme = entries[0]["scheme"]
        temperatures = {float(e["temperature"]) for e in entries}
        scales = {float(e["cfg_scale"]) for e in entries}
        assert len(scales) == 1, f"{target}: per-step guidance scales are not supported by this test"
        greedy = temperatures == {0.0}
        if scheme == "autoregressive":
            domain = next(d for d in trace["mod_dict_order"] if reference_domain_to_modality(d) == target)
            slots = tensors[f"{name}.in.{domain}.tensor"].shape[1]
            columns["tokens_per_target"].append(min(slots - 1, 256))  # the target slots after the lone [S_1]
            columns["decoding_steps"].append(None)
            columns["token_decoding_schedules"].append("ml4m_linear")
        else:
            counts = [int(e["num_tokens"]) for e in entries]
            columns["tokens_per_target"].append(sum(counts))
            columns["decoding_steps"].append(len(counts))
            columns["token_decoding_schedules"].append(reference_token_schedule(scheme, counts))
        columns["autoregression_schemes"].append(scheme)
        columns["temps"].append(1.0 if greedy else temperatures.pop())
        columns["greedy"].append(greedy)
        columns["cfg_scales"].append(scales.pop())
    kwargs = trace["generate_kwargs"]
    schedule = build_generation_schedule(
        config, cond_domains, targets, top_k=float(kwargs["top_k"]), top_p=float(kwargs["top_p"]),
        conventions="ml4m", encoder_order="schedule", **columns,
    )
    return {"tokens": tokens, "pixel_values": pixel_values, "schedule": schedule, "seed": int(kwargs["seed"]),
            "targets": targets}


@pytest.mark.parametrize("trace_file, trace_name", _trace_params())
def test_generation_matches_reference_trace(trace_file, trace_name):
    meta = json.loads(trace_file.read_text())
    trace = meta["traces"][trace_name]
    if not trace.get("deterministic", True):
        pytest.skip(f"{trace_name}: sampled with torch.multinomial's random stream (for information only: see §16 of the ml4m fixtures' README.md)")
    model = converted_model(trace_file, meta)
    tensors = trace_tensors(trace_file)
    plan = plan_from_trace(model, trace, tensors, trace_name)
    num_sentinels = int(meta.get("text_tokenizer", {}).get("num_sentinels", 200))
    generator = torch.Generator()
    tokens, known = generate(model, plan["tokens"], plan["schedule"], generator=generator, pixel_values=plan["pixel_values"],
                             seed=plan["seed"], num_sentinels=num_sentinels, return_known=True)
    for domain in trace["mod_dict_order"]:
        if f"{trace_name}.out.{domain}.tensor" not in tensors:
            continue
        modality = reference_domain_to_modality(domain)
        expected = tensors[f"{trace_name}.out.{domain}.tensor"].long()
        expected_valid = ~tensors[f"{trace_name}.out.{domain}.input_mask"]
        if model.config.modality(modality).is_sequence:
            for row in range(expected.shape[0]):
                ours = tokens[modality][row][known[modality][row]].tolist()
                theirs = expected[row][expected_valid[row]].tolist()
                assert ours == theirs, f"{modality} row {row}: ours {ours[:12]}... vs reference {theirs[:12]}..."
        else:
            assert known[modality].all(), f"{modality}: not every position was generated"
            differ = (tokens[modality] != expected).sum().item()
            assert differ == 0, f"{modality}: {differ} of {expected.numel()} tokens differ from the reference trace"
