"""The reference's masking mixtures: alphas files as they are, presets, keep modes, random budgets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import yaml

from fourm_hf import FourMConfig
from fourm_hf.data.masking import (
    REFERENCE_MIXTURES,
    DirichletMasking,
    FourMMaskingCollator,
    mixture_from_alphas,
    read_alphas_file,
    with_sample_index,
)
from fourm_hf.training.pretrain import random_corpus

# The reference's mix_mod21_all2allmix_rgb2all_capT5bias.yaml, its numbers copied here as data.
FOURM21_WEIGHTS = [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
_OTHER_IN, _OTHER_OUT = [0.01, 0.1, 1.0, 10.0, 0.0, 0.05, 0.05], [0.01, 0.1, 1.0, 10.0, 0.5, 0.5, 0.5]
FOURM21_ALPHAS = {
    "rgb@224": ([0.01, 0.1, 1.0, 10.0, 1000.0, 0.05, 0.05], [0.0] * 7, None),
    "caption": ([0.01, 0.1, 1.0, 10.0, 0.0, 5.0, 0.0], [0.01, 0.1, 1.0, 10.0, 0.5, 0.0, 0.5],
                ["random"] * 5 + ["all", "random"]),
    "t5_caption": ([0.01, 0.1, 1.0, 10.0, 0.0, 0.0, 5.0], [0.01, 0.1, 1.0, 10.0, 0.5, 0.5, 0.0],
                   ["random"] * 6 + ["all"]),
    "det": (_OTHER_IN, _OTHER_OUT, ["random"] * 7),
    "tok_rgb@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_normal@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_depth@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_semseg@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_clip@224": (_OTHER_IN, _OTHER_OUT, None),
    "human_poses": (_OTHER_IN, _OTHER_OUT, ["random"] * 7),
    "tok_dinov2@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_dinov2_global": (_OTHER_IN, _OTHER_OUT, None),
    "tok_imagebind@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_imagebind_global": (_OTHER_IN, _OTHER_OUT, None),
    "tok_canny_edge@224": (_OTHER_IN, _OTHER_OUT, None),
    "tok_sam_edge@224": (_OTHER_IN, _OTHER_OUT, None),
    "color_palette": (_OTHER_IN, _OTHER_OUT, ["binary"] * 7),
    "metadata": (_OTHER_IN, _OTHER_OUT, ["random"] * 7),
    "sam_instance": (_OTHER_IN, _OTHER_OUT, ["random"] * 7),
}
FOURM21_NAMES = ["rgb", "caption", "t5_caption", "det", "tok_rgb", "tok_normal", "tok_depth", "tok_semseg", "tok_clip",
                 "human_poses", "tok_dinov2", "tok_dinov2_global", "tok_imagebind", "tok_imagebind_global",
                 "tok_canny_edge", "tok_sam_edge", "color_palette", "metadata", "sam_instance"]


def fourm21_file_data(with_weights=True, nested=True):
    alphas = {}
    for name, (inputs, targets, keep) in FOURM21_ALPHAS.items():
        alphas[name] = {"input_alphas": list(inputs), "target_alphas": list(targets), **({"keep": keep} if keep else {})}
    data = {"alphas_mixture": alphas} if nested else dict(alphas)
    if with_weights:
        data["sampling_weights"] = list(FOURM21_WEIGHTS)
    return data


def fourm21_config(**overrides):
    """The 4M-21 modalities from the registry on a tiny trunk (no weights needed for masking)."""
    outputs = [n for n in FOURM21_NAMES if n not in ("rgb", "t5_caption")]
    settings = dict(hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2,
                    input_modalities=FOURM21_NAMES, output_modalities=outputs, input_budget=256, target_budget=256)
    settings.update(overrides)
    return FourMConfig(**settings)


def as_tuples(components):
    return [(dict(c.input_alphas), dict(c.target_alphas), c.weight, dict(c.keep)) for c in components]


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_4m21_file_loads_as_the_copied_numbers_and_the_preset(tmp_path):
    config = fourm21_config()
    from_data, report = mixture_from_alphas(fourm21_file_data(), config)
    assert len(from_data) == 7 and [c.weight for c in from_data] == FOURM21_WEIGHTS
    assert report.skipped == [] and "t5_caption: target_alphas (not an output of this model)" in report.dropped
    assert from_data[4].input_alphas["rgb"] == 1000.0 and from_data[5].keep["caption"] == "all"
    assert from_data[6].keep["t5_caption"] == "all" and from_data[0].keep["color_palette"] == "binary"
    assert from_data[0].keep["tok_rgb"] == "random"
    assert "t5_caption" not in from_data[0].target_alphas
    preset = FourMMaskingCollator(config, strategy="mix_mod21_all2allmix_rgb2all_capT5bias").components
    assert as_tuples(preset) == as_tuples(from_data)
    from_file = FourMMaskingCollator(config, strategy=str(write_yaml(tmp_path / "mix.yaml", fourm21_file_data())))
    assert as_tuples(from_file.components) == as_tuples(from_data)


def test_the_shared_alphas_files_load_as_they_are():
    from conftest import shared_path

    folder = shared_path("fixtures", "ml4m", "alphas")
    files = sorted(folder.glob("*.yaml"))
    assert files, f"no alphas files in {folder}"
    config = fourm21_config()
    for path in files:
        collator = FourMMaskingCollator(config, strategy=str(path))
        data = read_alphas_file(path)
        assert len(collator.components) == len(data["sampling_weights"])
        if path.stem in REFERENCE_MIXTURES:  # the shipped preset carries the same numbers
            preset = FourMMaskingCollator(config, strategy=path.stem)
            assert as_tuples(preset.components) == as_tuples(collator.components)
    assert "mix_mod21_all2allmix_rgb2all_capT5bias" in [p.stem for p in files]
    shipped = read_alphas_file(folder / "mix_mod21_all2allmix_rgb2all_capT5bias.yaml")
    assert shipped == fourm21_file_data()


def test_files_without_weights_at_the_top_level_and_without_suffix(tmp_path):
    config = fourm21_config()
    path = write_yaml(tmp_path / "flat.yaml", fourm21_file_data(with_weights=False, nested=False))
    collator = FourMMaskingCollator(config, strategy=str(path))
    assert [c.weight for c in collator.components] == [1.0] * 7
    np.testing.assert_allclose(np.diff(collator.component_cdf, prepend=0.0), [1 / 7] * 7)
    components, _ = mixture_from_alphas(read_alphas_file(tmp_path / "flat"), config)  # the SR config's spelling
    assert len(components) == 7


def test_modalities_the_model_lacks_are_skipped_unknown_ones_are_errors(tmp_path):
    config = FourMConfig(hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2)  # 4M-7
    components, report = mixture_from_alphas(fourm21_file_data(), config)
    assert "t5_caption" in report.skipped and "tok_dinov2_global" in report.skipped and "det" not in report.skipped
    assert set(components[0].input_alphas) == set(config.input_modalities)
    bad = fourm21_file_data()
    bad["alphas_mixture"]["tok_nothing@224"] = {"input_alphas": [1.0] * 7, "target_alphas": [1.0] * 7}
    with pytest.raises(ValueError, match="modality 'tok_nothing@224' is not a modality any registry knows"):
        FourMMaskingCollator(config, strategy=str(write_yaml(tmp_path / "bad.yaml", bad)))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["alphas_mixture"]["det"].update(input_alphas=[-1.0] + _OTHER_IN[1:]),
     "modality 'det' input_alphas\\[0\\] must be a finite number >= 0, got -1.0"),
    (lambda d: d.update(sampling_weights=[0.0] * 7), "sampling_weights .* sum to zero"),
    (lambda d: d.update(sampling_weights=[1.0] * 6), "sampling_weights has 6 values, expected one per setting \\(7\\)"),
    (lambda d: d["alphas_mixture"]["caption"].update(keep=["sometimes"] * 7), "modality 'caption' keep must list one of"),
    (lambda d: d["alphas_mixture"]["det"].update(target_alphas=[0.5] * 5), "modality 'det' target_alphas has 5 values"),
    (lambda d: d["alphas_mixture"]["det"].pop("target_alphas"), "modality 'det' must be a mapping with input_alphas"),
    (lambda d: d["alphas_mixture"]["det"].update(alpha=[1.0]), "modality 'det' has unknown key"),
], ids=["negative", "zero-weights", "weight-count", "keep", "alpha-count", "missing", "unknown-key"])
def test_bad_alphas_files_are_named_errors(tmp_path, change, message):
    data = fourm21_file_data()
    change(data)
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ValueError, match=message) as error:
        FourMMaskingCollator(fourm21_config(), strategy=str(path))
    assert "bad.yaml" in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        FourMMaskingCollator(fourm21_config(), strategy=str(tmp_path / "missing.yaml"))
    write_yaml(tmp_path / "list.yaml", [1, 2])
    with pytest.raises(ValueError, match="must hold a mapping"):
        FourMMaskingCollator(fourm21_config(), strategy=str(tmp_path / "list.yaml"))


def test_settings_are_drawn_by_weight_and_budgets_hold_over_2000_draws():
    from scipy.stats import chisquare

    config = fourm21_config()
    collator = FourMMaskingCollator(config, 256, 256, strategy="mix_mod21_all2allmix_rgb2all_capT5bias", seed=0,
                                    min_input_tokens=64, min_target_tokens=32)
    sample = with_sample_index(random_corpus(config, 1, seed=0, caption_length=(5, 20)).with_format("numpy"))[0]
    drawn = Counter()
    capacity = {name: collator._capacity(name, "input") for name in config.input_modalities}
    for index in range(2000):
        masked = collator.mask_sample({**sample, "sample_index": index})
        drawn[masked.component] += 1
        n_in, n_target = sum(masked.input_counts.values()), sum(masked.target_counts.values())
        assert 1 <= n_in <= 256 and n_target <= 256
        assert all(count <= capacity[name] for name, count in masked.input_counts.items())
        assert len(masked.input_ids) == n_in and len(masked.labels) == n_target
        if masked.component < 4:  # all->all: every modality has input alpha > 0, so the drawn budget is used up
            assert n_in >= 64
    observed = [drawn[k] for k in range(7)]
    expected = np.array(FOURM21_WEIGHTS) / sum(FOURM21_WEIGHTS) * 2000
    assert chisquare(observed, expected).pvalue > 0.01, observed


def tiny_text_config():
    return FourMConfig(hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2, image_size=32,
                       patch_size=16, input_modalities=["tok_rgb", "caption"], output_modalities=["tok_rgb", "caption"])


@pytest.mark.parametrize("keep", ["all", "binary", "random"])
def test_keep_modes(keep):
    config = tiny_text_config()
    strategy = DirichletMasking({"caption": 1.0}, {"caption": 1.0}, keep={"caption": keep})
    collator = FourMMaskingCollator(config, 20, 21, strategy=strategy, seed=0)
    caption = np.append(np.arange(300, 319), 3)
    outcomes = Counter()
    for index in range(200):
        masked = collator.mask_sample({"tok_rgb": np.zeros(4, dtype=np.int64), "caption": caption, "sample_index": index})
        encoder = masked.input_ids.tolist()
        if encoder == caption.tolist():
            outcomes["whole"] += 1
        elif encoder == [5]:  # [S_1]: the whole caption is one target span
            outcomes["none"] += 1
        else:
            outcomes["part"] += 1
    if keep == "all":
        assert outcomes == {"whole": 200}
    elif keep == "binary":
        assert set(outcomes) == {"whole", "none"} and 60 < outcomes["whole"] < 140
    else:
        assert outcomes["part"] > 150
    with pytest.raises(ValueError, match="keep\\['caption'\\] must be one of"):
        DirichletMasking({"caption": 1.0}, {}, keep={"caption": "most"})


def test_keep_all_is_lowered_until_the_input_fits():
    config = tiny_text_config()
    strategy = DirichletMasking({"caption": 1.0}, {"caption": 1.0}, keep={"caption": "all"})
    collator = FourMMaskingCollator(config, 8, 21, strategy=strategy, seed=0)
    caption = np.append(np.arange(300, 319), 3)
    for index in range(20):
        masked = collator.mask_sample({"tok_rgb": np.zeros(4, dtype=np.int64), "caption": caption, "sample_index": index})
        assert 1 <= len(masked.input_ids) <= 8
        assert len(masked.labels) > 0  # what the encoder does not see is a target
