"""fourm-hf convert-ml4m on every released layout: round trips, bad inputs, and a Hub repo id.

Released-layout checkpoints are written from our own tiny models with the inverse mapping
(``reference_export.py``), so these tests need no fixtures: the 4M-7 layout (shared modality
embeddings), the 4M-21 layout (T5 embeddings, patch-14 grids, learned global positions, separate
modality embeddings, ``t5_caption`` among the outputs) and the SR layout (224 and 448 px together,
the shared tensors saved under their decoder names).
"""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file

from fourm_hf import FourMConfig
from fourm_hf.cli import main as cli_main
from fourm_hf.modalities import get_modality
from fourm_hf.modeling.generation import build_preset_schedule, get_preset
from fourm_hf.ml4m.conversion import convert_ml4m_checkpoint, load_reference_model
from fourm_hf.modeling.modeling_fourm import FourMModel
from fourm_hf.ml4m.reference_export import reference_state_dict
from fourm_hf.ml4m.reference_names import reference_domain_to_modality
from hub_server import HubServer, huggingface_hub_pointed_at

TOKEN = "hf_convert_test_token"
TEXT = ["caption", "det"]
FOURM7_IMAGES = ["tok_rgb@224", "tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_clip@224"]
LAYOUTS = {
    "4m7": dict(domains_in=["rgb@224", *TEXT, *FOURM7_IMAGES], domains_out=[*TEXT, *FOURM7_IMAGES]),
    "4m21": dict(
        domains_in=["caption", "t5_caption", "metadata", "human_poses", "rgb@224", "tok_rgb@224", "tok_dinov2@224",
                    "tok_dinov2_global", "tok_imagebind_global"],
        domains_out=["caption", "t5_caption", "metadata", "human_poses", "tok_rgb@224", "tok_dinov2@224",
                     "tok_dinov2_global", "tok_imagebind_global"],
        share_modality_embeddings=False,
    ),
    "sr": dict(domains_in=["rgb@224", "caption", "tok_rgb@224", "rgb@448", "tok_rgb@448", "tok_depth@448"],
               domains_out=["tok_rgb@448", "tok_depth@448"]),
}


def reference_config(layout: str) -> dict:
    layout = {key: list(value) if isinstance(value, list) else value for key, value in LAYOUTS[layout].items()}
    return dict(layout, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, mlp_ratio=4, image_size=224,
                patch_size=16, act_layer="SiLU", gated_mlp=True, qkv_bias=False, proj_bias=False, mlp_bias=False,
                norm_bias=False)


def tiny_model(layout: str) -> FourMModel:
    """Our model of a layout with small vocabularies and every parameter random (nothing at its init constant)."""
    ref = reference_config(layout)
    names = lambda domains: [reference_domain_to_modality(d) for d in domains]  # noqa: E731
    inputs, outputs = names(ref["domains_in"]), [n for n in names(ref["domains_out"]) if n != "t5_caption"]
    specs = {}
    for name in dict.fromkeys(inputs + outputs):
        spec = get_modality(name)
        specs[name] = (spec.replace(vocab_size=48) if spec.vocab_size else spec).to_dict()
    config = FourMConfig(hidden_size=32, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2,
                         input_modalities=inputs, output_modalities=outputs, modality_specs=specs,
                         share_modality_embeddings=ref.get("share_modality_embeddings", True))
    model = FourMModel(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    return model


def write_released_folder(folder, layout: str, model: FourMModel | None = None) -> FourMModel:
    """``config.json`` + ``model.safetensors`` as a released 4M Hub repo holds them."""
    model = model or tiny_model(layout)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(reference_config(layout)))
    save_file({k: v.contiguous() for k, v in reference_state_dict(model, reference_config(layout)).items()},
              str(folder / "model.safetensors"))
    return model


def assert_same_weights(ours: FourMModel, converted: FourMModel) -> None:
    expected, got = ours.state_dict(), converted.state_dict()
    assert sorted(expected) == sorted(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_released_layouts_convert_back_to_the_same_model(layout, tmp_path):
    ours = write_released_folder(tmp_path / "released", layout)
    assert_same_weights(ours, load_reference_model(tmp_path / "released" / "model.safetensors",
                                                   tmp_path / "released" / "config.json"))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_converted_checkpoints_name_the_reference_demo_preset(layout, tmp_path):
    write_released_folder(tmp_path / "released", layout)
    assert cli_main(["convert-ml4m", "--checkpoint", str(tmp_path / "released"), "--output", str(tmp_path / "out")]) == 0
    config = FourMConfig.from_pretrained(tmp_path / "out")
    assert config.generation_preset == "ml4m_demo"
    conditions = [name for name in ("rgb", "tok_rgb") if name in config.input_modalities][:1]
    targets = [name for name in config.output_modalities if name not in conditions]
    schedule = build_preset_schedule(config, get_preset(config.generation_preset), conditions, targets)
    assert [plan.modality for plan in schedule.targets] and {p.modality for p in schedule.targets} <= set(targets)


def test_geometry_of_the_4m21_and_sr_modalities():
    config = tiny_model("4m21").config
    assert config.modality_grid_size("tok_rgb") == 14 and config.num_positions("tok_rgb") == 196
    assert config.modality_grid_size("tok_dinov2") == 16 and config.num_positions("tok_dinov2") == 256
    assert config.num_positions("tok_dinov2_global") == 16 and config.modality("tok_dinov2_global").learned_positions
    assert config.modality("human_poses").decoder_position_limit == 263
    assert "t5_caption" in config.input_modalities and "t5_caption" not in config.output_modalities
    sr = tiny_model("sr").config
    assert sr.modality_grid_size("tok_rgb@448") == 28 and sr.modality_grid_size("tok_rgb") == 14
    assert sr.modality_image_size("rgb@448") == 448


def test_the_cli_converts_a_released_folder_atomically(tmp_path, capsys):
    ours = write_released_folder(tmp_path / "released", "4m21")
    output = tmp_path / "converted"
    assert cli_main(["convert-ml4m", "--checkpoint", str(tmp_path / "released"), "--output", str(output)]) == 0
    assert "Converted" in capsys.readouterr().out
    assert_same_weights(ours, FourMModel.from_pretrained(output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "released"]  # no staging folder left


def test_an_unknown_domain_is_named_with_how_to_register_it(tmp_path):
    write_released_folder(tmp_path / "released", "4m7")
    config = reference_config("4m7")
    config["domains_in"].append("tok_thermal@224")
    with pytest.raises(ValueError, match=r"'tok_thermal@224'.*register_modality\(.*name='tok_thermal'"):
        convert_ml4m_checkpoint(tmp_path / "released" / "model.safetensors", config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_weight_whose_shape_disagrees_with_the_config_is_refused(tmp_path):
    write_released_folder(tmp_path / "released", "4m7")
    config = dict(reference_config("4m7"), num_heads=4, dim=64)  # config of another model size
    with pytest.raises(ValueError, match=r"has shape \(.*\) but the config implies"):
        convert_ml4m_checkpoint(tmp_path / "released" / "model.safetensors", config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep_fraction", [0.5, 0.999])
def test_a_truncated_file_is_refused_and_leaves_no_output(tmp_path, keep_fraction):
    write_released_folder(tmp_path / "released", "sr")
    weights = tmp_path / "released" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        convert_ml4m_checkpoint(weights, tmp_path / "released" / "config.json", tmp_path / "out" / "model")
    assert not (tmp_path / "out" / "model").exists()
    assert not any((tmp_path / "out").glob(".model.*")) if (tmp_path / "out").exists() else True


def test_a_non_empty_output_folder_is_refused_before_reading_anything(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        convert_ml4m_checkpoint(tmp_path / "missing.safetensors", reference_config("4m7"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.fixture()
def hub(tmp_path):
    """The loopback Hub with huggingface_hub pointed at it (environment and the module constants)."""
    with HubServer(token=TOKEN) as server, huggingface_hub_pointed_at(server, tmp_path / "hf_home"):
        yield server


def test_convert_from_a_hub_repo_id(hub, tmp_path, capsys):
    """A released-layout repo (config.json + model.safetensors, as EPFL-VILAB/4M-21_XL) converts by its id."""
    ours = write_released_folder(tmp_path / "released", "4m21")
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("4M-21_tiny", token=TOKEN)
    api.upload_folder(repo_id="fourm-tester/4M-21_tiny", folder_path=str(tmp_path / "released"), token=TOKEN)
    output = tmp_path / "converted"
    assert cli_main(["convert-ml4m", "--repo-id", "fourm-tester/4M-21_tiny", "--output", str(output)]) == 0
    assert_same_weights(ours, FourMModel.from_pretrained(output))
    assert any(path.endswith("/model.safetensors") for _, path in hub.requests)
    # an expected error is one line on stderr and exit status 2 (cli.run_command)
    assert cli_main(["convert-ml4m", "--repo-id", "fourm-tester/absent", "--output", str(tmp_path / "absent")]) == 2
    assert "Cannot download config.json from the Hub repo 'fourm-tester/absent'" in capsys.readouterr().err
    assert not (tmp_path / "absent").exists()
