"""The reference sampler's conventions as options: its token and temperature schedules, fractional
top-k, the convention presets and their errors (the trace tests check them against real traces)."""

from __future__ import annotations

import pytest
import torch

from fourm_hf import FourMModel
from fourm_hf.modeling.generation import (
    CONVENTIONS,
    build_generation_schedule,
    filter_logits,
    generate,
    pack_encoder_inputs,
    prepare_state,
    resolve_conventions,
    reveal_counts,
    sample_tokens,
    temperature_schedule,
)
from fourm_hf.modeling.generation import build_preset_schedule, get_preset
from fourm_hf.testing_utils import tiny_config


def test_reference_token_schedules():
    assert reveal_counts(196, 8, "ml4m_cosine") == [7, 21, 32, 38, 38, 32, 21, 7]  # the reference's (§16 of the ml4m fixtures' README.md)
    assert reveal_counts(196, 8, "cosine") == [4, 11, 18, 24, 30, 34, 37, 38]  # ours (MaskGIT paper)
    assert reveal_counts(196, 4, "ml4m_linear") == [49, 49, 49, 49]
    assert reveal_counts(196, 8, "ml4m_linear") == [25, 25, 25, 25, 24, 24, 24, 24]
    assert reveal_counts(3, 5, "ml4m_linear") == [1, 1, 1, 0, 0]
    for name in ("ml4m_cosine", "ml4m_linear"):
        assert sum(reveal_counts(784, 8, name)) == 784
    queries = lambda counts: sum(196 - sum(counts[:i]) for i in range(len(counts)))  # noqa: E731
    assert queries(reveal_counts(196, 8, "cosine")) > 1.2 * queries(reveal_counts(196, 8, "ml4m_cosine"))
    with pytest.raises(ValueError, match="token decoding schedule"):
        reveal_counts(10, 2, "arccos")


def test_onex_temperature_schedule():
    counts = reveal_counts(196, 8, "ml4m_linear")
    temps = temperature_schedule(3.0, 8, "onex:0.5:0.5", counts)
    assert len(temps) == 8 and temps[0] < 3.0 and temps[-1] == pytest.approx(0.5)
    assert list(temps) == sorted(temps, reverse=True)
    with pytest.raises(ValueError, match="onex"):
        temperature_schedule(3.0, 8, "onex:0.5", counts)


def test_fractional_top_k_is_a_fraction_of_the_vocabulary():
    logits = torch.arange(10.0).repeat(2, 1)
    kept = torch.isfinite(filter_logits(logits, top_k=0.3))
    assert kept.sum(dim=1).tolist() == [3, 3] and kept[:, -3:].all()
    config = tiny_config()
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth"], top_k=0.25)
    assert schedule.targets[0].top_k == 0.25
    for bad in (1.5, -1, True):
        with pytest.raises(ValueError, match="top_k"):
            build_generation_schedule(config, ["tok_rgb"], ["tok_depth"], top_k=bad)


def test_filter_before_temperature_changes_the_nucleus():
    logits = torch.tensor([[4.0, 3.0, 0.0, -1.0]])
    generator = torch.Generator().manual_seed(0)
    ids_after, probs_after = sample_tokens(logits, 10.0, generator, top_p=0.5)
    ids_before, probs_before = sample_tokens(logits, 10.0, torch.Generator().manual_seed(0), top_p=0.5,
                                             filter_order="before_temperature")
    assert int(ids_before) == 0 and float(probs_before) == pytest.approx(1.0)  # raw logits: one token holds p >= 0.5
    assert float(probs_after) < 1.0  # tempered first: the nucleus holds several tokens


def test_convention_presets_and_overrides():
    assert resolve_conventions(None) == CONVENTIONS["fourm_hf"]
    assert resolve_conventions("ml4m") == CONVENTIONS["ml4m"]
    mixed = resolve_conventions({"sequence_start": "sentinel"})
    assert mixed["sequence_start"] == "sentinel" and mixed["reveal_rule"] == "confidence"
    assert resolve_conventions({"base": "ml4m", "reveal_rule": "confidence"})["roar_order"] == "ml4m"
    with pytest.raises(ValueError, match="unknown key"):
        resolve_conventions({"reveal": "ml4m"})
    with pytest.raises(ValueError, match="must be one of"):
        resolve_conventions({"reveal_rule": "best"})
    with pytest.raises(ValueError, match="conventions must be one of"):
        resolve_conventions("reference")
    with pytest.raises(ValueError, match="encoder_order"):
        build_generation_schedule(tiny_config(), ["tok_rgb"], ["tok_depth"], encoder_order="sorted")


def test_sentinel_start_puts_a_lone_start_sentinel_in_the_encoder_and_ml4m_stop_keeps_no_end_token():
    torch.manual_seed(0)
    model = FourMModel(tiny_config()).eval()
    tokens = {"tok_rgb": torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(1))}
    ours = build_generation_schedule(model.config, ["tok_rgb"], ["caption"], greedy=True, tokens_per_target=10)
    theirs = build_generation_schedule(model.config, ["tok_rgb"], ["caption"], greedy=True, tokens_per_target=10,
                                       conventions="ml4m")
    caption_id = model.config.modality_id("caption")
    for schedule, expected in ((ours, 0), (theirs, 1)):
        state = prepare_state(model.config, tokens, schedule)
        packed = pack_encoder_inputs(state, ["tok_rgb"], ("caption", torch.zeros(2, dtype=torch.long)),
                                     schedule.targets[0].sequence_start == "sentinel")
        lone = (packed["input_modality_ids"] == caption_id) & (packed["attention_mask"] == 1)
        assert lone.sum(dim=1).tolist() == [expected] * 2
        if expected:
            assert (packed["input_ids"][lone] == 5).all() and (packed["input_positions"][lone] == 0).all()
    out_theirs, known_theirs = generate(model, tokens, theirs, return_known=True, num_sentinels=4)
    assert known_theirs["caption"].sum() > 0
    for row in range(2):
        ids = out_theirs["caption"][row][known_theirs["caption"][row]]
        assert not ((ids >= 4) & (ids < 8)).any()  # sentinels [S_0]..[S_3] are never stored


def test_demo_preset_recipes():
    config = tiny_config()
    preset = get_preset("ml4m_demo")
    assert preset["x_to_rgb"]["tok_rgb"]["num_steps"] == 25 and preset["rgb_to_x"]["tok_depth"]["num_steps"] == 1
    rgb_to_x = build_preset_schedule(config, "ml4m_demo", ["tok_rgb"], ["tok_depth", "caption"])
    depth, caption = rgb_to_x.targets
    assert (depth.scheme, depth.num_steps, depth.token_schedule, depth.temperatures) == ("roar", 1, "ml4m_linear", (0.01,))
    assert depth.guidance_weights == ((2.0,),) and depth.top_p == 0.8 and depth.roar_order == "ml4m"
    assert caption.scheme == "autoregressive" and caption.temperatures[0] == 0.3
    assert caption.guidance_conditions == ()  # cfg 1: no guidance for text
    x_to_rgb = build_preset_schedule(config, "ml4m_demo", ["tok_depth"], ["tok_rgb"])
    rgb = x_to_rgb.targets[0]
    assert rgb.num_steps == 25 and rgb.temperatures[0] < 3.0 and rgb.temperatures[-1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown generation preset"):
        get_preset("ml4m")
