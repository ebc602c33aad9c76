"""Tests of the 4M masking collator (fourm_hf.data.masking)."""

import numpy as np
import pytest
import torch
from transformers import TrainerControl, TrainerState

from fourm_hf.configuration_fourm import FourMConfig
from fourm_hf.data.masking import (
    EOS_ID,
    IGNORE_INDEX,
    SENTINEL_OFFSET,
    DirichletMasking,
    FourMMaskingCollator,
    MaskingEpochCallback,
    cut_target_at_sentinel,
    distribute_budget,
    masking_preset,
    span_mask_sequence,
    with_sample_index,
)

IMAGE_MODALITIES = ["tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip"]
WORD_LOW = 300  # text ids used by the tests start here, far above the sentinels (5..203)


def tiny_config(image_size=64, **kwargs):
    """4M-7 modalities on a 4x4 grid (image_size 64, patch 16)."""
    return FourMConfig(
        hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=16, **kwargs,
    )


def make_sample(config, index, caption_length=20, det_length=30, seed=123):
    rng = np.random.default_rng((seed, index))
    cells = config.grid_size**2
    sample = {}
    for name in config.modality_names:
        spec = config.modality(name)
        if spec.kind == "image_tokens":
            sample[name] = rng.integers(0, spec.vocab_size, cells)
        elif spec.kind == "sequence":
            length = caption_length if name == "caption" else det_length
            sample[name] = np.append(rng.integers(WORD_LOW, 1000, length - 1), EOS_ID)
        else:
            sample["pixel_values"] = rng.standard_normal((3, config.image_size, config.image_size)).astype(np.float32)
    sample["sample_index"] = index
    return sample


def rows_of(batch, row, modality_id, side):
    """(ids, positions, labels-or-None) of one modality in one row of a batch, in slot order."""
    if side == "encoder":
        keep = (batch["attention_mask"][row] == 1) & (batch["input_modality_ids"][row] == modality_id)
        return batch["input_ids"][row][keep].numpy(), batch["input_positions"][row][keep].numpy(), None
    keep = (batch["decoder_attention_mask"][row] == 1) & (batch["decoder_modality_ids"][row] == modality_id)
    return (
        batch["decoder_input_ids"][row][keep].numpy(),
        batch["decoder_positions"][row][keep].numpy(),
        batch["labels"][row][keep].numpy(),
    )


def reconstruct(masked_input, target):
    """Put the target spans back in place of the sentinels of the masked input."""
    spans, current = {}, None
    for token in target:
        if SENTINEL_OFFSET < token < SENTINEL_OFFSET + 200:
            current = int(token)
            spans[current] = []
        else:
            spans[current].append(int(token))
    out = []
    for token in masked_input:
        out.extend(spans[int(token)] if int(token) in spans else [int(token)])
    return out


# ---- budgets ----------------------------------------------------------------------------------
def test_distribute_budget_largest_remainder_and_caps():
    weights = np.array([0.5, 0.3, 0.2])
    # exact shares 3.5 / 2.1 / 1.4 -> floors 3/2/1, the leftover token to the largest fraction (0.5)
    assert distribute_budget(7, weights, np.array([10, 10, 10])).tolist() == [4, 2, 1]
    # modality 0 capped at 2: its excess (2) split 0.3 : 0.2 over the others -> 1.2 / 0.8 -> 1 / 1
    assert distribute_budget(7, weights, np.array([2, 10, 10])).tolist() == [2, 3, 2]
    # not enough room: everything available, nothing more
    assert distribute_budget(50, weights, np.array([3, 4, 5])).tolist() == [3, 4, 5]
    # capacity 0 never receives tokens, even with weight
    assert distribute_budget(5, weights, np.array([0, 10, 10])).tolist() == [0, 3, 2]
    # all weights on full modalities: the rest is split equally among the open ones
    assert distribute_budget(6, np.array([1.0, 0.0, 0.0]), np.array([2, 10, 10])).tolist() == [2, 2, 2]


def test_budgets_respected_exactly():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=32, target_budget=24, strategy="all2all", seed=1)
    batch = collator([make_sample(config, i) for i in range(16)])
    assert batch["attention_mask"].sum(dim=1).tolist() == [32] * 16
    assert batch["decoder_attention_mask"].sum(dim=1).tolist() == [24] * 16
    assert (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist() == [24] * 16


def test_image_inputs_and_targets_are_disjoint_and_carry_the_right_ids():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=40, target_budget=40, strategy="uniform", seed=2)
    samples = [make_sample(config, i) for i in range(12)]
    batch = collator(samples)
    seen_both = 0
    for row, sample in enumerate(samples):
        for name in IMAGE_MODALITIES:
            modality_id = config.modality_id(name)
            input_ids, input_positions, _ = rows_of(batch, row, modality_id, "encoder")
            decoder_ids, target_positions, labels = rows_of(batch, row, modality_id, "decoder")
            assert not set(input_positions.tolist()) & set(target_positions.tolist())
            assert len(set(input_positions.tolist())) == len(input_positions)
            np.testing.assert_array_equal(input_ids, sample[name][input_positions])
            np.testing.assert_array_equal(labels, sample[name][target_positions])
            assert (decoder_ids == 0).all()
            seen_both += bool(len(input_positions) and len(target_positions))
    assert seen_both > 0


# ---- sequences ---------------------------------------------------------------------------------
def test_span_mask_sequence_layout():
    tokens = np.array([310, 311, 312, 313, 314, EOS_ID])
    dropped = np.array([False, True, True, False, True, False])
    masked_input, target, sentinels = span_mask_sequence(tokens, dropped)
    s1, s2, s3 = SENTINEL_OFFSET + 1, SENTINEL_OFFSET + 2, SENTINEL_OFFSET + 3
    assert masked_input.tolist() == [310, s1, 313, s2, EOS_ID]
    assert target.tolist() == [s1, 311, 312, s2, 314, s3]
    assert sentinels.tolist() == [0, 3, 5]
    # cut: a prefix ending at a sentinel at index j costs j decoder tokens
    assert cut_target_at_sentinel(target, sentinels, 5).tolist() == target.tolist()
    assert cut_target_at_sentinel(target, sentinels, 4).tolist() == [s1, 311, 312, s2]
    assert cut_target_at_sentinel(target, sentinels, 2).tolist() == []
    # nothing dropped: no target
    masked_input, target, _ = span_mask_sequence(tokens, np.zeros(6, dtype=bool))
    assert masked_input.tolist() == tokens.tolist() and target.tolist() == []
    # limited sentinels: spans after the last allowed one stay visible
    masked_input, target, _ = span_mask_sequence(tokens, dropped, max_spans=1)
    assert masked_input.tolist() == [310, s1, 313, 314, EOS_ID]
    assert target.tolist() == [s1, 311, 312, s2]


def test_span_masking_reconstructs_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(1, 40))
        tokens = np.append(rng.integers(WORD_LOW, 1000, length - 1), EOS_ID)
        dropped = rng.random(length) < rng.random()
        masked_input, target, sentinels = span_mask_sequence(tokens, dropped)
        assert reconstruct(masked_input, target) == tokens.tolist()
        num_spans = max(len(sentinels) - 1, 0)
        assert len(masked_input) == int((~dropped).sum()) + num_spans
        assert len(target) == (int(dropped.sum()) + num_spans + 1 if num_spans > 0 else 0)


def caption_only_collator(config, target_budget, seed=3):
    strategy = DirichletMasking({"caption": 1.0}, {"caption": 1.0}, name="caption_only")
    return FourMMaskingCollator(config, input_budget=40, target_budget=target_budget, strategy=strategy, seed=seed)


def test_collated_sequences_reconstruct_the_original():
    config = tiny_config()
    collator = caption_only_collator(config, target_budget=41)
    samples = [make_sample(config, i, caption_length=40) for i in range(20)]
    batch = collator(samples)
    caption_id = config.modality_id("caption")
    for row, sample in enumerate(samples):
        masked_input, input_positions, _ = rows_of(batch, row, caption_id, "encoder")
        decoder_ids, decoder_positions, labels = rows_of(batch, row, caption_id, "decoder")
        assert input_positions.tolist() == list(range(len(masked_input)))
        assert decoder_positions.tolist() == list(range(len(decoder_ids)))
        np.testing.assert_array_equal(decoder_ids[1:], labels[:-1])  # teacher forcing: labels = inputs shifted
        target = np.append(decoder_ids, labels[-1:]) if len(labels) else np.zeros(0, dtype=np.int64)
        assert reconstruct(masked_input, target) == sample["caption"].tolist()


def test_sequence_tokens_are_contiguous_and_ordered():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=48, target_budget=48, strategy="all2all", seed=4)
    batch = collator([make_sample(config, i) for i in range(24)])
    for name in ("caption", "det"):
        modality_id = config.modality_id(name)
        for mask_key, mod_key, pos_key in (
            ("attention_mask", "input_modality_ids", "input_positions"),
            ("decoder_attention_mask", "decoder_modality_ids", "decoder_positions"),
        ):
            for row in range(24):
                slots = torch.nonzero((batch[mask_key][row] == 1) & (batch[mod_key][row] == modality_id)).flatten()
                if len(slots):
                    assert slots.tolist() == list(range(int(slots[0]), int(slots[0]) + len(slots)))
                    assert batch[pos_key][row][slots].tolist() == list(range(len(slots)))


def is_sentinel(token):
    return SENTINEL_OFFSET < token < SENTINEL_OFFSET + 200


def test_targets_cut_only_at_sentinel_boundaries():
    config = tiny_config()
    collator = caption_only_collator(config, target_budget=8)
    rng = np.random.default_rng(0)
    cut = 0
    for trial in range(60):
        tokens = np.append(rng.integers(WORD_LOW, 1000, 39), EOS_ID)
        full_input, full_target = collator._mask_sequence(np.random.default_rng(trial), tokens, 40, 1000)
        cut_input, cut_target = collator._mask_sequence(np.random.default_rng(trial), tokens, 40, 8)
        np.testing.assert_array_equal(cut_input, full_input)
        assert len(cut_target) - 1 <= 8
        np.testing.assert_array_equal(cut_target, full_target[: len(cut_target)])  # a prefix of the full target
        if len(cut_target):
            assert is_sentinel(cut_target[0]) and is_sentinel(cut_target[-1])
        if len(cut_target) < len(full_target):
            cut += 1
            # the next span did not fit: the sentinel closing it lies beyond the budget
            later = [j for j in range(max(len(cut_target), 1), len(full_target)) if is_sentinel(full_target[j])]
            assert later[0] > 8
    assert cut > 0
    # and in a batch: every caption target ends on a sentinel and fits the budget
    batch = collator([make_sample(config, i, caption_length=40) for i in range(20)])
    caption_id = config.modality_id("caption")
    for row in range(20):
        decoder_ids, _, labels = rows_of(batch, row, caption_id, "decoder")
        assert len(labels) <= 8
        if len(labels):
            assert decoder_ids[0] == SENTINEL_OFFSET + 1 and is_sentinel(labels[-1])


def test_sentinels_never_leave_the_sentinel_range():
    config = tiny_config()
    strategy = DirichletMasking({"caption": 1.0}, {"caption": 1.0})
    collator = FourMMaskingCollator(config, input_budget=40, target_budget=41, strategy=strategy, num_sentinels=4)
    batch = collator([make_sample(config, i, caption_length=40) for i in range(30)])
    text = torch.cat([batch["input_ids"].flatten(), batch["decoder_input_ids"].flatten(), batch["labels"].flatten()])
    sentinels = text[(text > SENTINEL_OFFSET) & (text < WORD_LOW)]
    assert len(sentinels) > 0
    assert sentinels.max() == SENTINEL_OFFSET + 3  # [S_3], the last of [S_0]..[S_3]: at most 2 spans
    with pytest.raises(ValueError, match="num_sentinels must be >= 3"):
        FourMMaskingCollator(config, num_sentinels=2)


# ---- determinism -------------------------------------------------------------------------------
def test_same_seed_epoch_index_gives_same_masks_in_any_batch():
    config = tiny_config()
    samples = [make_sample(config, i) for i in range(10)]
    first = FourMMaskingCollator(config, input_budget=32, target_budget=32, seed=7)
    other_process = FourMMaskingCollator(config, input_budget=32, target_budget=32, seed=7)
    batch = first(samples)
    shuffled_order = [7, 2, 9, 0, 5]
    other = other_process([samples[i] for i in shuffled_order])
    for new_row, old_row in enumerate(shuffled_order):
        for key in batch:
            if key != "pixel_values":
                assert torch.equal(batch[key][old_row], other[key][new_row]), key
    # a different epoch or seed changes the masks
    other_process.set_epoch(1)
    assert not torch.equal(other_process(samples)["input_positions"], batch["input_positions"])
    reseeded = FourMMaskingCollator(config, input_budget=32, target_budget=32, seed=8)
    assert not torch.equal(reseeded(samples)["input_positions"], batch["input_positions"])
    # ... and going back to epoch 0 restores them
    other_process.set_epoch(0)
    assert torch.equal(other_process(samples)["input_positions"], batch["input_positions"])


# ---- mixtures and alphas -----------------------------------------------------------------------
def test_4m7_mixture_weights_and_rgb2all_branch():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=16, target_budget=16, strategy="4m7", seed=5)
    names = [c.name for c in collator.components]
    assert names == ["rgb2all", "all2all"]
    sample = make_sample(config, 0)
    rgb2all = 0
    for index in range(400):
        masked = collator.mask_sample({**sample, "sample_index": index})
        if masked.component == 0:
            rgb2all += 1
            assert masked.input_counts == {"rgb": 16}
            assert "rgb" not in masked.target_counts
    # Binomial(400, 0.5): std 10, so 4 std either side
    assert 160 <= rgb2all <= 240


def test_caption_biased_preset():
    config = tiny_config()
    components = masking_preset("4m7_caption", config)
    assert [c.name for c in components] == ["rgb2all", "caption2all", "all2all"]
    assert components[1].input_alphas["caption"] == 1000.0 and components[1].input_alphas["tok_rgb"] == 0.0
    assert all(c.target_alphas.get("rgb", 0.0) == 0.0 for c in components)


def test_alpha_1000_takes_almost_all_of_the_input_budget():
    config = tiny_config(image_size=128)  # 8x8 grid: 64 RGB patches, more than the budget
    inputs = config.input_modalities
    strong = DirichletMasking({**{n: 0.5 for n in inputs}, "rgb": 1000.0}, {n: 0.5 for n in config.output_modalities})
    collator = FourMMaskingCollator(config, input_budget=32, target_budget=32, strategy=strong, seed=6)
    flat = FourMMaskingCollator(config, input_budget=32, target_budget=32, strategy="all2all", seed=6)
    sample = make_sample(config, 0)
    strong_share = np.mean([collator.mask_sample({**sample, "sample_index": i}).input_counts.get("rgb", 0) / 32 for i in range(60)])
    flat_share = np.mean([flat.mask_sample({**sample, "sample_index": i}).input_counts.get("rgb", 0) / 32 for i in range(60)])
    assert strong_share > 0.97
    assert flat_share < 0.4


def test_missing_modality_gets_no_budget_when_allowed():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=32, target_budget=32, strategy="4m7", allow_missing_modalities=True)
    samples = []
    for i in range(30):
        sample = make_sample(config, i)
        del sample["caption"], sample["pixel_values"]
        samples.append(sample)
    batch = collator(samples)
    used = set(batch["input_modality_ids"][batch["attention_mask"] == 1].tolist())
    used |= set(batch["decoder_modality_ids"][batch["decoder_attention_mask"] == 1].tolist())
    assert config.modality_id("caption") not in used and config.modality_id("rgb") not in used
    assert not batch["pixel_values"].any()  # always in the batch (one structure every step), zeros here
    # without RGB no sample can be RGB->all: all fall back to the all->all component
    assert {collator.mask_sample(s).component for s in samples} == {1}
    assert batch["attention_mask"].sum(dim=1).tolist() == [32] * 30


# ---- output format -----------------------------------------------------------------------------
def test_fixed_shapes_dtypes_and_padding():
    config = tiny_config()
    collator = caption_only_collator(config, target_budget=30)
    batch = collator([make_sample(config, i, caption_length=12) for i in range(3)])
    for key in ("input_ids", "input_modality_ids", "input_positions", "attention_mask"):
        assert batch[key].shape == (3, 40) and batch[key].dtype == torch.int64, key
    for key in ("decoder_input_ids", "decoder_modality_ids", "decoder_positions", "decoder_attention_mask", "labels"):
        assert batch[key].shape == (3, 30) and batch[key].dtype == torch.int64, key
    assert not batch["pixel_values"].any()  # no pixel inputs in this strategy: zeros
    # caption of 12 tokens cannot fill 40 input slots: padding is all zeros, labels -100
    padding = batch["attention_mask"] == 0
    assert padding.any()
    for key in ("input_ids", "input_modality_ids", "input_positions"):
        assert (batch[key][padding] == 0).all()
    decoder_padding = batch["decoder_attention_mask"] == 0
    assert (batch["labels"][decoder_padding] == IGNORE_INDEX).all()
    assert (batch["labels"][~decoder_padding] != IGNORE_INDEX).all()
    assert (batch["decoder_input_ids"][decoder_padding] == 0).all()


def test_pixel_values_are_carried_for_rgb_inputs():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=16, target_budget=16, strategy="rgb2all")
    samples = [make_sample(config, i) for i in range(2)]
    batch = collator(samples)
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    np.testing.assert_array_equal(batch["pixel_values"][1].numpy(), samples[1]["pixel_values"])
    rgb = config.modality_id("rgb")
    assert (batch["input_modality_ids"] == rgb).all() and (batch["input_ids"] == 0).all()
    assert sorted(batch["input_positions"][0].tolist()) == list(range(16))


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (lambda s: s.pop("tok_depth"), ValueError, "tok_depth.*missing"),
        (lambda s: s.__setitem__("tok_semseg", np.full(16, 4096)), ValueError, "tok_semseg.*4096.*vocabulary"),
        (lambda s: s.__setitem__("caption", np.array([-1, 3])), ValueError, "caption.*-1"),
        (lambda s: s.__setitem__("tok_rgb", np.zeros(15, dtype=np.int64)), ValueError, "tok_rgb.*15 tokens.*16"),
        (lambda s: s.__setitem__("det", np.full(257, 300)), ValueError, "det.*257 tokens.*max_length"),
        (lambda s: s.__setitem__("caption", np.zeros(0, dtype=np.int64)), ValueError, "caption.*0 tokens"),
        (lambda s: s.__setitem__("tok_clip", np.zeros((4, 4), dtype=np.int64)), ValueError, "tok_clip.*1-D"),
        (lambda s: s.__setitem__("tok_clip", np.zeros(16) + 0.5), TypeError, "tok_clip.*integer"),
        (lambda s: s.__setitem__("pixel_values", np.zeros((3, 32, 32), np.float32)), ValueError, "rgb.*pixel_values"),
        (lambda s: s.pop("sample_index"), ValueError, "sample_index.*with_sample_index"),
    ],
)
def test_bad_samples_raise_clear_errors(change, error, pattern):
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=16, target_budget=16)
    sample = make_sample(config, 0)
    change(sample)
    with pytest.raises(error, match=pattern):
        collator([sample])


def test_budget_larger_than_available_tokens():
    config = tiny_config()
    with pytest.raises(ValueError, match="input_budget 100000 is larger"):
        FourMMaskingCollator(config, input_budget=100000)
    small = tiny_config(input_modalities=["tok_rgb", "caption"], output_modalities=["tok_rgb", "caption"])
    collator = FourMMaskingCollator(small, input_budget=30, target_budget=8, strategy="all2all")
    with pytest.raises(ValueError, match="input_budget 30 is larger than the 26 tokens"):
        collator([make_sample(small, 0, caption_length=10)])


def test_bad_strategies_raise():
    config = tiny_config()
    with pytest.raises(ValueError, match="rgb.*input only"):
        FourMMaskingCollator(config, strategy=DirichletMasking({"tok_rgb": 1.0}, {"rgb": 1.0}))
    with pytest.raises(ValueError, match="tok_foo"):
        FourMMaskingCollator(config, strategy=DirichletMasking({"tok_foo": 1.0}, {"tok_rgb": 1.0}))
    with pytest.raises(ValueError, match="every input alpha is 0"):
        FourMMaskingCollator(config, strategy=DirichletMasking({}, {"tok_rgb": 1.0}))
    with pytest.raises(ValueError, match="Unknown masking preset"):
        FourMMaskingCollator(config, strategy="nope")
    with pytest.raises(ValueError, match="alpha"):
        DirichletMasking({"tok_rgb": -1.0}, {})


def test_validate_dataset_rejects_empty_and_bad_rows():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=16, target_budget=16)
    with pytest.raises(ValueError, match="empty"):
        collator.validate_dataset([])
    good = make_sample(config, 0)
    bad = {**make_sample(config, 1), "tok_normal": np.full(16, 9000)}
    with pytest.raises(ValueError, match="sample 1: modality 'tok_normal'"):
        collator.validate_dataset([good, bad])
    assert collator.validate_dataset([good, good]) == 2


# ---- plumbing ----------------------------------------------------------------------------------
def test_with_sample_index_for_datasets_and_plain_lists():
    import datasets

    table = datasets.Dataset.from_dict({"caption": [[300, 3], [301, 3], [302, 3]]})
    indexed = with_sample_index(table)
    assert indexed["sample_index"] == [0, 1, 2]
    with pytest.raises(ValueError, match="already has"):
        with_sample_index(indexed)
    wrapped = with_sample_index([{"caption": [300, 3]}, {"caption": [301, 3]}])
    assert len(wrapped) == 2 and wrapped[1] == {"caption": [301, 3], "sample_index": 1}


def test_trainer_callback_sets_the_epoch():
    config = tiny_config()
    collator = FourMMaskingCollator(config, input_budget=16, target_budget=16)
    callback = MaskingEpochCallback(collator)
    state = TrainerState()
    state.epoch = 0.0
    callback.on_epoch_begin(None, state, TrainerControl())
    assert collator.epoch == 0
    state.epoch = 3.0
    callback.on_epoch_begin(None, state, TrainerControl())
    assert collator.epoch == 3
    state.epoch = 1.5  # resumed in the middle of epoch 1
    callback.on_epoch_begin(None, state, TrainerControl())
    assert collator.epoch == 1


def test_model_accepts_the_collated_batch():
    modeling = pytest.importorskip("fourm_hf.modeling.modeling_fourm", reason="FourMModel is not available")
    config = tiny_config()
    torch.manual_seed(0)
    model = modeling.FourMModel(config)
    collator = FourMMaskingCollator(config, input_budget=24, target_budget=24, strategy="4m7", seed=0)
    batch = collator([make_sample(config, i) for i in range(4)])
    assert "pixel_values" in batch or not (batch["input_modality_ids"] == config.modality_id("rgb")).any()
    output = model(**batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
