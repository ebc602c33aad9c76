"""Training batches for every layout the model runs, checked on every reference fixture trunk.

The trunks are discovered under ../shared/fixtures/ml4m (4M-7, 4M-21, 4M-7-SR layouts); each test id
carries the fixture's name. For each: the collator's batches run the converted trunk, every token's
modality and position lie inside its grid or length, per-modality counts stay within the budgets,
and with keep mode ``all`` and room for every token the positions are exactly the reference's:
row-major over the modality's own grid, 0..15 for a global embedding, 0..N-1 along a sequence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fourm_hf.data.masking import DirichletMasking, FourMMaskingCollator, with_sample_index
from fourm_hf.data.masking.layout import modality_layouts
from fourm_hf.ml4m.conversion import load_reference_model
from fourm_hf.testing_utils import random_packed_batch
from fourm_hf.training.pretrain import random_corpus

from test_ml4m_parity import FIXTURE_DIR, FIXTURE_SETS

BUDGETS = (96, 64)


def _trunk_params():
    if not FIXTURE_SETS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no FM fixture trunks in {FIXTURE_DIR} (../shared absent)"))]
    return [pytest.param(fixture, id=fixture.name) for fixture in FIXTURE_SETS]


_MODELS = {}


def converted_trunk(fixture):
    """The converted trunk of a fixture set (cached: each is loaded once per session)."""
    if fixture.name not in _MODELS:
        import json

        meta = json.loads(fixture.meta_path.read_text())
        _MODELS[fixture.name] = load_reference_model(fixture.weights_path, fixture.config_path or meta["fm_config"])
    return _MODELS[fixture.name]


def corpus_samples(config, count, seed=0):
    corpus = with_sample_index(random_corpus(config, count, seed=seed, caption_length=(3, 9)).with_format("numpy"))
    return [corpus[i] for i in range(count)]


def tokens_by_modality(batch, row, modality_id, side):
    mask_key, mod_key, pos_key = (("attention_mask", "input_modality_ids", "input_positions") if side == "encoder"
                                  else ("decoder_attention_mask", "decoder_modality_ids", "decoder_positions"))
    selected = (batch[mask_key][row] == 1) & (batch[mod_key][row] == modality_id)
    ids_key = "input_ids" if side == "encoder" else "labels"
    return batch[ids_key][row][selected].numpy(), batch[pos_key][row][selected].numpy()


@pytest.mark.parametrize("fixture", _trunk_params())
@pytest.mark.parametrize("strategy", ["all2all", "reference_mixture"])
def test_collated_batches_run_the_converted_trunk_within_grids_and_budgets(fixture, strategy):
    model = converted_trunk(fixture)
    config = model.config
    if strategy == "reference_mixture":  # the reference's own mixture where the trunk has its outputs
        if "t5_caption" in config.modality_names:
            strategy = "mix_mod21_all2allmix_rgb2all_capT5bias"
        else:
            strategy = "mix_mod7_all2allmix_rgb2all_capbias" if "tok_depth" in config.output_modalities else "4m7"
    collator = FourMMaskingCollator(config, *BUDGETS, strategy=strategy, seed=1, min_input_tokens=16)
    samples = corpus_samples(config, 6)
    batch = collator(samples)
    output = model(**batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()

    layouts = modality_layouts(config)
    for row in range(len(samples)):
        assert int(batch["attention_mask"][row].sum()) <= BUDGETS[0]
        assert int(batch["decoder_attention_mask"][row].sum()) <= BUDGETS[1]
        for layout in layouts:
            _, input_positions = tokens_by_modality(batch, row, layout.modality_id, "encoder")
            _, target_positions = tokens_by_modality(batch, row, layout.modality_id, "decoder")
            assert len(input_positions) <= (layout.num_positions if layout.is_input else 0), layout.name
            assert ((0 <= input_positions) & (input_positions < layout.num_positions)).all(), layout.name
            assert ((0 <= target_positions) & (target_positions < layout.num_positions)).all(), layout.name
            if not layout.can_be_target:
                assert len(target_positions) == 0, layout.name
            if layout.is_grid:
                assert len(set(input_positions) | set(target_positions)) == len(input_positions) + len(target_positions)
                assert len(input_positions) + len(target_positions) <= layout.num_positions
            else:
                assert input_positions.tolist() == list(range(len(input_positions))), layout.name


@pytest.mark.parametrize("fixture", _trunk_params())
def test_keep_all_gives_the_reference_indices(fixture):
    model = converted_trunk(fixture)
    config = model.config
    samples = corpus_samples(config, 2, seed=3)
    layouts = [layout for layout in modality_layouts(config) if layout.is_input]
    inputs = {layout.name: 1.0 for layout in layouts}
    keep_all = DirichletMasking(inputs, {}, keep={name: "all" for name in inputs}, name="keep_all")
    # the samples' sequence lengths differ: each gets a collator whose input budget holds all its tokens
    for sample in samples:
        total = sum(layout.num_positions if layout.is_grid else len(sample[layout.field]) for layout in layouts)
        collator = FourMMaskingCollator(config, total, 0, strategy=keep_all, seed=0)
        batch = collator([sample])
        for layout in layouts:
            ids, positions = tokens_by_modality(batch, 0, layout.modality_id, "encoder")
            expected = layout.num_positions if layout.is_grid else len(sample[layout.field])
            assert positions.tolist() == list(range(expected)), (layout.name, positions[:20])
            if layout.kind in ("image_tokens", "sequence"):
                np.testing.assert_array_equal(ids, np.asarray(sample[layout.field]))
            if layout.kind == "sequence_embedding":
                assert ids.tolist() == list(range(expected))  # the rows they read
                dense = batch["continuous_inputs"][layout.name][0]
                np.testing.assert_array_equal(dense[:expected].numpy(), np.asarray(sample[layout.field]))
        output = model(**batch)  # and the trunk runs the whole sample
        assert output.encoder_last_hidden_state.shape[1] == total


@pytest.mark.parametrize("fixture", _trunk_params())
def test_random_packed_batch_runs_every_trunk(fixture):
    model = converted_trunk(fixture)
    batch = random_packed_batch(model.config, batch_size=2, input_budget=48, target_budget=32, seed=0)
    output = model(**batch)
    assert torch.isfinite(output.loss)


@pytest.mark.parametrize("fixture", _trunk_params())
def test_wrong_sizes_are_named_errors(fixture):
    config = converted_trunk(fixture).config
    collator = FourMMaskingCollator(config, 64, 32, strategy="all2all")
    sample = corpus_samples(config, 1)[0]
    grids = [layout for layout in modality_layouts(config) if layout.kind == "image_tokens"]
    for layout in grids[:3]:
        side = int(layout.num_positions**0.5)
        wrong = dict(sample, **{layout.field: np.zeros(196 if layout.num_positions != 196 else 256, dtype=np.int64)})
        with pytest.raises(ValueError, match=f"modality {layout.name!r} field {layout.field!r} has .* tokens, expected "
                                             f"{layout.num_positions} \\(its {side}x{side} grid"):
            collator([wrong])
    over = sum(collator._capacity(name, "input") for name in config.input_modalities) + 1
    with pytest.raises(ValueError, match=f"input_budget {over} is larger than all the tokens .* the model's maximum"):
        FourMMaskingCollator(config, over, 16, strategy="all2all")
    with pytest.raises(ValueError, match="min_input_tokens must be an int in \\[1, 64\\]"):
        FourMMaskingCollator(config, 64, 16, strategy="all2all", min_input_tokens=65)


def test_t5_caption_of_the_wrong_width_is_a_named_error():
    fixture = next((f for f in FIXTURE_SETS if f.config_path is not None
                    and "t5_caption" in converted_trunk(f).config.modality_names), None)
    if fixture is None:
        pytest.skip(f"no fixture trunk with t5_caption in {FIXTURE_DIR}")
    config = converted_trunk(fixture).config
    collator = FourMMaskingCollator(config, 64, 32, strategy="all2all")
    sample = corpus_samples(config, 1)[0]
    wrong = dict(sample, t5_caption=np.zeros((5, 512), dtype=np.float32))
    with pytest.raises(ValueError, match="modality 't5_caption' field 't5_caption' has shape \\(5, 512\\), expected "
                                         "\\(N, 4096\\) with 1 <= N <= 77"):
        collator([wrong])
    too_long = dict(sample, t5_caption=np.zeros((78, 4096), dtype=np.float32))
    with pytest.raises(ValueError, match="1 <= N <= 77"):
        collator([too_long])


def test_second_pixels_input_reads_its_own_field():
    from fourm_hf import FourMConfig

    config = FourMConfig(hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2,
                         image_size=32, patch_size=16, input_modalities=["rgb", "rgb@448", "tok_rgb@448"],
                         output_modalities=["tok_rgb@448"])
    collator = FourMMaskingCollator(config, 8, 8, strategy="all2all")
    sample = corpus_samples(config, 1)[0]
    assert set(sample) >= {"pixel_values", "rgb@448", "tok_rgb@448"}
    batch = collator([sample])
    assert batch["continuous_inputs"]["rgb@448"].shape == (1, 3, 448, 448)
    missing = {k: v for k, v in sample.items() if k != "rgb@448"}
    with pytest.raises(ValueError, match="modality 'rgb@448' is missing \\(field 'rgb@448'\\)"):
        collator([missing])
