"""The sampler (modeling/generation/) on a tiny random model: every decoding mode, guidance,
chaining, in-/out-painting, the KV cache against full recomputation, and bad input."""

from __future__ import annotations

import pytest
import torch

from fourm_hf import FourMModel
from fourm_hf.modeling.generation import (
    EOS_ID,
    PAD_ID,
    START_SENTINEL_ID,
    build_generation_schedule,
    combine_guidance,
    filter_logits,
    generate,
    guidance_views,
    image_target_logits,
    pack_encoder_inputs,
    prepare_state,
    reveal_counts,
    sample_tokens,
    temperature_schedule,
)
from fourm_hf.modeling.layers import KVCache
from fourm_hf.testing_utils import tiny_config

BATCH = 3
GRID_TOKENS = 16  # tiny_config: 32 px images, 8 px patches


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return FourMModel(config).eval()


@pytest.fixture(scope="module")
def inputs(config):
    generator = torch.Generator().manual_seed(11)
    tokens = {"tok_rgb": torch.randint(config.modality("tok_rgb").vocab_size, (BATCH, GRID_TOKENS), generator=generator)}
    pixels = torch.randn(BATCH, 3, config.image_size, config.image_size, generator=generator)
    return tokens, pixels


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(model, inputs, schedule, seed=0, **kwargs):
    tokens, pixels = inputs
    uses_pixels = "rgb" in schedule.cond_domains
    return generate(model, dict(tokens), schedule, seeded(seed), pixel_values=pixels if uses_pixels else None, **kwargs)


# ---- schedules ----------------------------------------------------------------------------------------
def test_reveal_counts_follow_the_schedules():
    cosine = reveal_counts(196, 8, "cosine")
    linear = reveal_counts(196, 8, "linear")
    assert sum(cosine) == sum(linear) == 196 and min(cosine) >= 1 and min(linear) >= 1
    assert cosine[0] < cosine[-1]  # cosine reveals few tokens first, many at the end
    assert cosine == sorted(cosine)
    assert max(linear) - min(linear) <= 1
    assert reveal_counts(3, 5) == [1, 1, 1, 0, 0]
    assert reveal_counts(5, 5, "linear") == [1] * 5
    assert reveal_counts(0, 4) == [0] * 4


def test_temperature_schedules():
    assert temperature_schedule(2.0, 4, "constant") == (2.0,) * 4
    assert temperature_schedule(2.0, 4, "linear") == pytest.approx((2.0, 1.5, 1.0, 0.5))
    decay = temperature_schedule(1.0, 5, "decay")
    assert decay[0] == 1.0 and decay[-1] == pytest.approx(0.1) and list(decay) == sorted(decay, reverse=True)


def test_schedule_defaults_per_modality(config):
    schedule = build_generation_schedule(config, ["rgb"], ["tok_depth", "caption"], cfg_scales=[3.0, 1.0])
    depth, caption = schedule.targets
    assert (depth.scheme, depth.num_steps, depth.num_tokens, depth.token_schedule) == ("maskgit", 8, GRID_TOKENS, "cosine")
    assert depth.guidance_conditions == (("rgb",),) and depth.guidance_weights == ((3.0,),) * 8
    assert (caption.scheme, caption.num_tokens, caption.guidance_conditions) == ("autoregressive", 24, ())
    grown = build_generation_schedule(config, ["rgb"], ["tok_depth", "caption"], cfg_scales=2.0, cfg_grow_conditioning=True)
    assert grown.targets[1].guidance_conditions == (("rgb", "tok_depth"),)


# ---- sampling -----------------------------------------------------------------------------------------
def test_sampling_filters_and_greedy():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 0.0, 4.9]])
    assert torch.isinf(filter_logits(logits, top_k=2)).sum(dim=1).tolist() == [2, 2]
    kept = ~torch.isinf(filter_logits(logits, top_p=0.6))  # masses 0.64 | 0.51 + 0.47
    assert kept.tolist() == [[False, True, False, False], [True, False, False, True]]
    greedy, _ = sample_tokens(logits, 1.0, None, greedy=True)
    top1, _ = sample_tokens(logits, 1.0, seeded(0), top_k=1)
    assert greedy.tolist() == top1.tolist() == [1, 0]
    draws = torch.stack([sample_tokens(logits, 1.0, seeded(seed))[0] for seed in range(100)])
    assert (draws[:, 1] == 3).float().mean() == pytest.approx(0.475, abs=0.1)  # 4.9 vs 5.0: near even
    assert set(draws[:, 0].tolist()) <= {0, 1, 2, 3} and len(set(draws[:, 0].tolist())) > 1


# ---- every decoding mode: deterministic, fills exactly what was asked --------------------------------
MODES = [
    dict(target="tok_depth", autoregression_schemes="maskgit", token_decoding_schedules="cosine"),
    dict(target="tok_depth", autoregression_schemes="maskgit", token_decoding_schedules="linear", temp_schedules="linear"),
    dict(target="tok_semseg", autoregression_schemes="roar", decoding_steps=3, temp_schedules="decay", top_k=5),
    dict(target="caption", top_p=0.9),
    dict(target="det", greedy=True, temps=0.0),
]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"{m['target']}-{m.get('autoregression_schemes', 'ar')}")
def test_each_mode_is_deterministic_and_fills_the_target(model, config, inputs, mode):
    options = dict(mode)
    target = options.pop("target")
    schedule = build_generation_schedule(config, ["tok_rgb"], [target], tokens_per_target=12 if target in ("caption", "det") else None, **options)
    first, known = run(model, inputs, schedule, seed=5, return_known=True)
    again = run(model, inputs, schedule, seed=5)
    other = run(model, inputs, schedule, seed=6)
    assert torch.equal(first[target], again[target])
    assert torch.equal(first["tok_rgb"], inputs[0]["tok_rgb"])
    vocab = config.modality(target).vocab_size
    values = first[target][known[target]]
    assert values.min() >= 0 and values.max() < vocab
    if config.modality(target).is_sequence:
        lengths = known[target].sum(dim=1)
        assert (lengths >= 1).all() and (lengths <= 12).all()
        for row, length in enumerate(lengths.tolist()):
            sequence = first[target][row, :length]
            assert PAD_ID not in sequence.tolist() and (first[target][row, length:] == PAD_ID).all()
            ended = sequence[-1].item() == EOS_ID
            assert ended or length == 12  # stopped at [EOS] / the end sentinel, or hit the token limit
            assert EOS_ID not in sequence[:-1].tolist()
    else:
        assert known[target].all() and first[target].shape == (BATCH, GRID_TOKENS)
    if not mode.get("greedy"):
        assert not torch.equal(first[target], other[target])


def test_tokens_per_target_fills_exactly_that_many(model, config, inputs):
    for scheme in ("maskgit", "roar"):
        schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_normal"], tokens_per_target=7,
                                             autoregression_schemes=scheme, decoding_steps=3)
        _, known = run(model, inputs, schedule, return_known=True)
        assert known["tok_normal"].sum(dim=1).tolist() == [7] * BATCH


@pytest.mark.parametrize("scheme", ["maskgit", "roar"])
def test_inpainting_and_outpainting_keep_the_given_tokens(model, config, inputs, scheme):
    generator = seeded(3)
    given = torch.randint(config.modality("tok_depth").vocab_size, (BATCH, GRID_TOKENS), generator=generator)
    grid = torch.arange(GRID_TOKENS).view(4, 4)
    centre = torch.zeros(4, 4, dtype=torch.bool)
    centre[1:3, 1:3] = True
    known = torch.stack([centre.flatten(), ~centre.flatten(), grid.flatten() % 3 == 0])  # out-, in-, scattered
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth"], autoregression_schemes=scheme, decoding_steps=4)
    tokens, pixels = inputs
    out, out_known = generate(model, {**tokens, "tok_depth": given}, schedule, seeded(0),
                              known={"tok_depth": known}, return_known=True)
    assert torch.equal(out["tok_depth"][known], given[known])
    assert out_known["tok_depth"].all()
    assert not torch.equal(out["tok_depth"][~known], given[~known])


def test_sequence_continuation_keeps_the_prefix(model, config, inputs):
    tokens, _ = inputs
    prefix = torch.tensor([[40, 41, 42, 0], [50, 0, 0, 0], [60, 61, 62, 63]])
    schedule = build_generation_schedule(config, ["tok_rgb"], ["caption"], tokens_per_target=5)
    out, known = generate(model, {**tokens, "caption": prefix}, schedule, seeded(1), return_known=True)
    lengths = known["caption"].sum(dim=1)
    for row, given in enumerate([3, 1, 4]):
        assert out["caption"][row, :given].tolist() == prefix[row, :given].tolist()
        assert given < lengths[row] <= given + 5
    state = prepare_state(config, {**tokens, "caption": prefix}, schedule)
    packed = pack_encoder_inputs(state, ["caption"], ("caption", torch.tensor([3, 1, 4])))
    rows = [packed["input_ids"][r][packed["attention_mask"][r].bool()].tolist() for r in range(BATCH)]
    assert rows == [[40, 41, 42, START_SENTINEL_ID], [50, START_SENTINEL_ID], [60, 61, 62, 63, START_SENTINEL_ID]]


def test_token_probs_cover_exactly_the_generated_sequence_tokens(model, config, inputs):
    tokens, _ = inputs
    prefix = torch.tensor([[40, 41, 42, 0], [50, 0, 0, 0], [60, 61, 62, 63]])
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth", "caption"], tokens_per_target=[None, 5],
                                         temps=[1.0, 1.3], top_k=[0, 20])
    given = {**tokens, "caption": prefix}
    plain = generate(model, dict(given), schedule, seeded(1))
    out, known, probs = generate(model, dict(given), schedule, seeded(1), return_known=True, return_token_probs=True)
    naive_out, naive_probs = generate(model, dict(given), schedule, seeded(1), naive=True, return_token_probs=True)
    assert all(torch.equal(out[name], plain[name]) for name in plain)  # recording changes nothing
    assert list(probs) == ["caption"]  # sequences only
    assert probs["caption"].shape == out["caption"].shape and probs["caption"].dtype == torch.float32
    generated = known["caption"] & (torch.arange(out["caption"].shape[1]) >= torch.tensor([3, 1, 4])[:, None])
    assert torch.equal(torch.isfinite(probs["caption"]), generated)  # NaN at the prefix and the padding
    assert ((probs["caption"][generated] > 0) & (probs["caption"][generated] <= 1)).all()
    assert (probs["caption"][generated] < 1).any()  # the model's probabilities, not the filtered sampler's
    assert torch.equal(naive_out["caption"], out["caption"])
    torch.testing.assert_close(naive_probs["caption"], probs["caption"], equal_nan=True, atol=1e-5, rtol=1e-5)


def test_a_sequence_generated_from_nothing_is_absent_from_the_encoder(config, inputs):
    """The collator trains "the whole caption is a target" with no caption token in the encoder (zero
    input budget), so generation must not add a lone [S_1] there; a row with a prefix still gets one."""
    tokens, _ = inputs
    schedule = build_generation_schedule(config, ["tok_rgb"], ["caption"], tokens_per_target=5)
    state = prepare_state(config, dict(tokens), schedule)
    state.tokens["caption"] = torch.tensor([[0, 0], [45, 0], [0, 0]])
    state.known["caption"] = state.tokens["caption"] != 0
    packed = pack_encoder_inputs(state, ["tok_rgb", "caption"], ("caption", torch.tensor([0, 1, 0])))
    caption_id = config.modality_id("caption")
    caption_slots = (packed["input_modality_ids"] == caption_id) & packed["attention_mask"].bool()
    assert caption_slots.sum(dim=1).tolist() == [0, 2, 0]
    assert packed["input_ids"][1][caption_slots[1]].tolist() == [45, START_SENTINEL_ID]
    assert packed["attention_mask"].sum(dim=1).tolist() == [GRID_TOKENS, GRID_TOKENS + 2, GRID_TOKENS]


def test_unconditional_generation_needs_only_a_batch_size(model, config):
    schedule = build_generation_schedule(config, [], ["tok_clip", "caption"], tokens_per_target=[None, 4], decoding_steps=2)
    out = generate(model, {}, schedule, seeded(0), batch_size=2)
    assert out["tok_clip"].shape == (2, GRID_TOKENS) and out["caption"].shape[0] == 2


# ---- cached decoding = full recomputation --------------------------------------------------------------
def test_decode_with_kv_cache_matches_full_decode(model, config):
    torch.manual_seed(4)
    encoded = model.encode(torch.randint(60, (2, 5)), torch.full((2, 5), config.modality_id("tok_rgb")),
                           torch.arange(5).expand(2, -1), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    ids = torch.randint(90, (2, 6))
    modality = torch.full_like(ids, config.modality_id("caption"))
    full, _ = model.decode(encoded, ids, modality, torch.arange(6).expand(2, -1))
    caches = [KVCache() for _ in model.decoder]
    context = model.decoder_context_key_values(encoded)
    steps = [model.decode(encoded, ids[:, i:i + 1], modality[:, :1], torch.full((2, 1), i),
                          context_key_values=context, kv_caches=caches)[0] for i in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert len(caches[0]) == 6


@pytest.mark.parametrize("greedy", [True, False])
def test_cached_autoregressive_decoding_equals_full_recomputation(model, config, inputs, greedy):
    schedule = build_generation_schedule(config, ["tok_rgb", "rgb"], ["caption", "det"], greedy=greedy, tokens_per_target=10,
                                         temps=0.0 if greedy else 1.3, cfg_scales=[1.0, 2.5], top_k=[0, 20])
    cached = run(model, inputs, schedule, seed=9)
    naive = run(model, inputs, schedule, seed=9, naive=True)
    cached_batched = run(model, inputs, schedule, seed=9, batch_guidance=True)  # the default on the CPU is one view at a time
    for name in ("caption", "det"):
        assert torch.equal(cached[name], naive[name]) and torch.equal(cached[name], cached_batched[name])
    assert cached["caption"].shape[1] > 3  # a real sequence was decoded, not just [EOS]


def test_guided_image_decoding_equals_two_pass_path(model, config, inputs):
    schedule = build_generation_schedule(config, ["tok_rgb", "rgb"], ["tok_depth", "tok_normal"], cfg_scales=3.0,
                                         autoregression_schemes=["maskgit", "roar"], decoding_steps=4)
    naive = run(model, inputs, schedule, seed=2, naive=True)
    for batch_guidance in (None, True, False):
        fast = run(model, inputs, schedule, seed=2, batch_guidance=batch_guidance)
        assert all(torch.equal(a, b) for a, b in zip(fast.values(), naive.values())), batch_guidance


# ---- guidance -----------------------------------------------------------------------------------------
def _partly_decoded_state(config, inputs, schedule):
    tokens, pixels = inputs
    depth = torch.randint(32, (BATCH, GRID_TOKENS), generator=seeded(8))
    known = torch.rand(BATCH, GRID_TOKENS, generator=seeded(9)) < 0.4
    state = prepare_state(config, {**tokens, "tok_depth": depth}, schedule, {"tok_depth": known}, pixels)
    queries = torch.stack([torch.nonzero(~row).flatten()[:3] for row in known])
    return state, queries, torch.ones_like(queries, dtype=torch.bool)


def test_batched_guidance_equals_the_two_pass_formula(model, config, inputs):
    schedule = build_generation_schedule(config, ["tok_rgb", "rgb"], ["tok_depth"], cfg_scales=2.5)
    state, queries, mask = _partly_decoded_state(config, inputs, schedule)
    plan = schedule.targets[0]
    views = guidance_views(state, plan)
    assert views == [["tok_depth"], ["rgb", "tok_rgb", "tok_depth"]]
    batched = image_target_logits(model, state, "tok_depth", queries, mask, views)
    unconditional = image_target_logits(model, state, "tok_depth", queries, mask, [views[0]], naive=True)[0]
    conditional = image_target_logits(model, state, "tok_depth", queries, mask, [views[1]], naive=True)[0]
    expected = unconditional + 2.5 * (conditional - unconditional)
    torch.testing.assert_close(combine_guidance(batched, (2.5,)), expected, atol=1e-5, rtol=1e-5)
    assert (conditional - unconditional).abs().max() > 1e-2  # the condition matters


def test_weighted_guidance(model, config, inputs):
    weighted = build_generation_schedule(config, ["tok_rgb", "rgb"], ["tok_depth"], guidance=[(("tok_rgb", "rgb"), 1.0)])
    state, queries, mask = _partly_decoded_state(config, inputs, weighted)
    plan = weighted.targets[0]
    guided = combine_guidance(image_target_logits(model, state, "tok_depth", queries, mask, guidance_views(state, plan)),
                              plan.guidance_weights[0])
    plain = build_generation_schedule(config, ["tok_rgb", "rgb"], ["tok_depth"])
    conditional = image_target_logits(model, state, "tok_depth", queries, mask, guidance_views(state, plain.targets[0]))[0]
    torch.testing.assert_close(guided, conditional, atol=1e-5, rtol=1e-5)  # weight 1 on everything = conditional

    two = build_generation_schedule(config, ["tok_rgb", "rgb"], ["tok_depth"], guidance={"tok_rgb": 2.0, "rgb": -1.0})
    views = guidance_views(state, two.targets[0])
    assert views == [["tok_depth"], ["tok_rgb", "tok_depth"], ["rgb", "tok_depth"]]
    logits = image_target_logits(model, state, "tok_depth", queries, mask, views)
    torch.testing.assert_close(combine_guidance(logits, (2.0, -1.0)),
                               logits[0] + 2.0 * (logits[1] - logits[0]) - (logits[2] - logits[0]))
    sequence = build_generation_schedule(config, ["tok_rgb", "rgb"], ["caption"], guidance={"tok_rgb": 2.0, "rgb": -1.0},
                                         tokens_per_target=6)
    assert torch.equal(run(model, inputs, sequence, seed=4)["caption"], run(model, inputs, sequence, seed=4, naive=True)["caption"])


def test_guidance_over_a_text_condition_blanks_it_to_a_sentinel(model, config, inputs):
    tokens, _ = inputs
    caption = torch.tensor([[40, 41, EOS_ID]] * BATCH)
    schedule = build_generation_schedule(config, ["tok_rgb", "caption"], ["tok_depth"], guidance={"caption": 3.0, "tok_rgb": -0.5},
                                         decoding_steps=2)
    state = prepare_state(config, {**tokens, "caption": caption}, schedule)
    views = guidance_views(state, schedule.targets[0])
    assert views == [[], ["caption"], ["tok_rgb"]]
    unconditional = pack_encoder_inputs(state, views[0])
    assert unconditional["input_ids"].tolist() == [[START_SENTINEL_ID]] * BATCH
    assert unconditional["input_modality_ids"].tolist() == [[config.modality_id("caption")]] * BATCH
    assert pack_encoder_inputs(state, views[1])["attention_mask"].sum(dim=1).tolist() == [3] * BATCH
    out = generate(model, {**tokens, "caption": caption}, schedule, seeded(0))
    naive = generate(model, {**tokens, "caption": caption}, schedule, seeded(0), naive=True)
    assert torch.equal(out["tok_depth"], naive["tok_depth"])


# ---- chaining -----------------------------------------------------------------------------------------
def test_chained_generation_feeds_outputs_as_inputs(model, config, inputs):
    tokens, _ = inputs
    chained = build_generation_schedule(config, ["tok_rgb"], ["tok_depth", "caption"], tokens_per_target=[None, 6])
    generator = seeded(21)
    out = generate(model, dict(tokens), chained, generator)
    # The same run done by hand: depth first, then the caption with depth as an input.
    by_hand = seeded(21)
    depth = generate(model, dict(tokens), build_generation_schedule(config, ["tok_rgb"], ["tok_depth"]), by_hand)
    caption = generate(model, {**tokens, "tok_depth": depth["tok_depth"]},
                       build_generation_schedule(config, ["tok_rgb", "tok_depth"], ["caption"], tokens_per_target=6), by_hand)
    assert torch.equal(out["tok_depth"], depth["tok_depth"]) and torch.equal(out["caption"], caption["caption"])
    # ... and what comes next really reads the depth: changing it changes the next target's logits.
    state = prepare_state(config, {**tokens, "tok_depth": depth["tok_depth"]}, chained)
    views = guidance_views(state, chained.targets[1])
    assert views == [["tok_rgb", "tok_depth"]]
    queries, mask = torch.zeros(BATCH, 1, dtype=torch.long), torch.ones(BATCH, 1, dtype=torch.bool)
    with_depth = image_target_logits(model, state, "tok_normal", queries, mask, views)[0]
    state.tokens["tok_depth"] = (depth["tok_depth"] + 1) % 32
    with_other_depth = image_target_logits(model, state, "tok_normal", queries, mask, views)[0]
    assert (with_depth - with_other_depth).abs().max() > 1e-3


# ---- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cond_domains=["tok_edges_nope"], target_domains=["tok_depth"]), "tok_edges_nope"),
        (dict(cond_domains=["tok_rgb"], target_domains=["depth_map"]), "depth_map"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_rgb"]), "both a conditioning input and a target"),
        (dict(cond_domains=["tok_rgb"], target_domains=[]), "empty"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], guidance={"caption": -1.0}), "'caption'"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], decoding_steps=0), "decoding_steps"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], temps=0.0), "temperature"),
        (dict(cond_domains=["tok_rgb"], target_domains=["caption"], temps=-1.0), "temperature"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], autoregression_schemes="autoregressive"), "scheme"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth", "caption"], temps=[1.0]), "temps"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], tokens_per_target=17), "tokens_per_target"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], top_p=1.5), "top_p"),
        (dict(cond_domains=["tok_rgb"], target_domains=["tok_depth"], cfg_scales=2.0, guidance={"tok_rgb": 2.0}), "not both"),
    ],
)
def test_bad_schedule_is_refused(config, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_generation_schedule(config, **kwargs)


def test_bad_generation_inputs_are_refused(model, config, inputs):
    tokens, pixels = inputs
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth"], decoding_steps=2)
    cases = [
        ({**tokens, "tok_edges_nope": tokens["tok_rgb"]}, {}, "tok_edges_nope"),
        ({"tok_rgb": tokens["tok_rgb"] + 64}, {}, r"tok_rgb.*\[0, 64\)"),
        ({"tok_rgb": tokens["tok_rgb"][:, :8]}, {}, "16 positions"),
        ({"tok_rgb": tokens["tok_rgb"][0]}, {}, r"\(batch, tokens\)"),
        ({}, {}, "tok_rgb"),
        ({**tokens, "caption": torch.ones(BATCH, 3, dtype=torch.long)}, {}, "neither a conditioning input"),
        ({**tokens, "tok_depth": tokens["tok_rgb"][:2] % 32}, {}, "same batch size"),
        (tokens, {"pixel_values": pixels}, "no pixels modality"),
        (tokens, {"known": {"tok_depth": torch.ones(BATCH, GRID_TOKENS, dtype=torch.bool)}}, "without tokens"),
    ]
    for given, extra, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(model, given, schedule, seeded(0), **extra)
    with pytest.raises(ValueError, match="pixel_values"):
        generate(model, {}, build_generation_schedule(config, ["rgb"], ["tok_depth"]), seeded(0), batch_size=BATCH)
    caption_prefix = torch.tensor([[40, 0, 41]] * BATCH)
    with pytest.raises(ValueError, match="prefix"):
        generate(model, {**tokens, "caption": caption_prefix},
                 build_generation_schedule(config, ["tok_rgb"], ["caption"]), seeded(0))


# ---- negative prompts: a variant of the caption with a negative weight -----------------------------------
POSITIVE = torch.tensor([[40, 41, 42, EOS_ID], [43, 44, EOS_ID, PAD_ID], [45, EOS_ID, PAD_ID, PAD_ID]])
NEGATIVE = torch.tensor([[50, 51, EOS_ID], [52, EOS_ID, PAD_ID], [53, 54, EOS_ID]])


def test_negative_prompt_logits_equal_the_hand_computed_weighted_combination(model, config, inputs):
    """u + 3 (c_pos - u) - 1.5 (c_neg - u), each pass computed on its own from a state holding only that caption."""
    tokens, _ = inputs
    guidance = [(("caption",), 3.0), (("caption#negative",), -1.5)]
    schedule = build_generation_schedule(config, ["tok_rgb", "caption"], ["tok_depth"], guidance=guidance)
    state = prepare_state(config, {**tokens, "caption": POSITIVE}, schedule, variant_tokens={"caption#negative": NEGATIVE})
    plan = schedule.targets[0]
    views = guidance_views(state, plan)
    assert views == [["tok_rgb"], ["tok_rgb", "caption"], ["tok_rgb", "caption#negative"]]
    negative_pass = pack_encoder_inputs(state, views[2])  # the negative caption stands in for the caption
    caption_id = config.modality_id("caption")
    for row in range(BATCH):
        shown = negative_pass["input_ids"][row][negative_pass["input_modality_ids"][row] == caption_id]
        assert shown.tolist() == NEGATIVE[row][NEGATIVE[row] != PAD_ID].tolist()
    queries = torch.arange(GRID_TOKENS).expand(BATCH, -1)
    mask = torch.ones_like(queries, dtype=torch.bool)
    guided = combine_guidance(image_target_logits(model, state, "tok_depth", queries, mask, views), plan.guidance_weights[0])

    plain = build_generation_schedule(config, ["tok_rgb", "caption"], ["tok_depth"])
    positive_state = prepare_state(config, {**tokens, "caption": POSITIVE}, plain)
    negative_state = prepare_state(config, {**tokens, "caption": torch.nn.functional.pad(NEGATIVE, (0, 1))}, plain)

    def one_pass(state, visible):
        return image_target_logits(model, state, "tok_depth", queries, mask, [visible], naive=True)[0]

    unconditional = one_pass(positive_state, ["tok_rgb"])  # the caption hidden: a lone [S_1]
    positive, negative = one_pass(positive_state, ["tok_rgb", "caption"]), one_pass(negative_state, ["tok_rgb", "caption"])
    expected = unconditional + 3.0 * (positive - unconditional) - 1.5 * (negative - unconditional)
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-5)
    assert (negative - positive).abs().max() > 1e-2  # the two captions lead to different logits


def test_negative_prompt_generates_and_weight_zero_changes_nothing(model, config, inputs):
    tokens, _ = inputs
    given = {**tokens, "caption": POSITIVE}
    for target, options in (("tok_depth", {"decoding_steps": 2}), ("det", {"tokens_per_target": 5})):
        with_negative = build_generation_schedule(config, ["tok_rgb", "caption"], [target], greedy=True,
                                                  guidance=[(("tok_rgb", "caption"), 2.0), (("caption#negative",), -1.0)], **options)
        zero = build_generation_schedule(config, ["tok_rgb", "caption"], [target], greedy=True,
                                         guidance=[(("tok_rgb", "caption"), 2.0), (("caption#negative",), 0.0)], **options)
        positive_only = build_generation_schedule(config, ["tok_rgb", "caption"], [target], greedy=True,
                                                  guidance=[(("tok_rgb", "caption"), 2.0)], **options)
        variants = {"caption#negative": NEGATIVE}
        out = generate(model, dict(given), with_negative, seeded(0), variant_tokens=variants)
        naive = generate(model, dict(given), with_negative, seeded(0), variant_tokens=variants, naive=True)
        sequential = generate(model, dict(given), with_negative, seeded(0), variant_tokens=variants, batch_guidance=False)
        assert torch.equal(out[target], naive[target]) and torch.equal(out[target], sequential[target]), target
        # a zero weight on the negative pass is the positive guidance alone (the same argmax tokens)
        assert torch.equal(generate(model, dict(given), zero, seeded(0), variant_tokens=variants)[target],
                           generate(model, dict(given), positive_only, seeded(0))[target]), target


def test_negative_prompt_without_a_positive_caption(model, config, inputs):
    """A negative caption needs no caption input: the model's caption slot shows it in its own pass only."""
    tokens, _ = inputs
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth"], decoding_steps=2,
                                         guidance=[(("tok_rgb",), 2.0), (("caption#negative",), -1.0)])
    state = prepare_state(config, dict(tokens), schedule, variant_tokens={"caption#negative": NEGATIVE})
    assert guidance_views(state, schedule.targets[0]) == [[], ["tok_rgb"], ["caption#negative"]]
    out = generate(model, dict(tokens), schedule, seeded(1), variant_tokens={"caption#negative": NEGATIVE})
    assert out["tok_depth"].shape == (BATCH, GRID_TOKENS)


def test_bad_negative_prompts_are_refused(model, config, inputs):
    tokens, _ = inputs
    schedule_cases = [
        ([(("caption#negative",), -1.0)], ["tok_rgb"], ["caption"], "is a target"),
        ([(("rgb#other",), -1.0)], ["tok_rgb", "caption"], ["tok_depth"], "not a token input modality"),
        ([(("caption", "caption#negative"), 1.0)], ["tok_rgb", "caption"], ["tok_depth"], "shows a modality twice"),
        ([(("caption#",), -1.0)], ["tok_rgb", "caption"], ["tok_depth"], "needs a label"),
    ]
    for guidance, conditions, targets, message in schedule_cases:
        with pytest.raises(ValueError, match=message):
            build_generation_schedule(config, conditions, targets, guidance=guidance)
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth"], guidance=[(("caption#negative",), -1.0)])
    plain = build_generation_schedule(config, ["tok_rgb"], ["tok_depth"])
    cases = [
        (schedule, {}, r"variant_tokens has no tokens for them"),
        (plain, {"caption#negative": NEGATIVE}, "no guidance condition of the schedule names it"),
        (schedule, {"caption#negative": NEGATIVE, "caption": NEGATIVE}, "not a variant name"),
        (schedule, {"caption#negative": NEGATIVE[:2]}, "same batch size"),
        (schedule, {"caption#negative": NEGATIVE.float()}, r"\(batch, tokens\) integer tensor"),
        (schedule, {"caption#negative": torch.tensor([[50, EOS_ID], [PAD_ID, PAD_ID], [51, EOS_ID]])}, "without any token"),
        (schedule, {"caption#negative": torch.tensor([[50, PAD_ID, 51]] * BATCH)}, "left-aligned"),
        (schedule, {"caption#negative": NEGATIVE + 1000}, r"must lie in \[0, 96\)"),
    ]
    for used, variants, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(model, dict(tokens), used, seeded(0), variant_tokens=variants)
