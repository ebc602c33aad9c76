"""FourMDiVAE (ViT encoder + lucid codebook + patched-UNet diffusion decoder) against the reference.

Fixture part: every folder under ``$FOURM_ML4M_FIXTURES/tokenizers`` (default ../shared/fixtures/ml4m)
whose released ``config.json`` is a DiVAE is loaded as is and checked against its
``<name>_io.safetensors`` (fixture README section 12): ids exact; encoder, quantizer, time
embeddings, per-step model outputs and samples, the final decode and the training-style call to
1e-4; timesteps exact. Unfixtured part: tiny models with 1 and 3 channels, sampling options,
save/load round trips and bad input.
"""

from __future__ import annotations

import copy
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
from fourm_hf import FourMDiVAE, FourMDiVAEConfig, FourMTokenizerModel
from fourm_hf.tokenizers.diffusion_sampling import make_scheduler, reference_timesteps
from fourm_hf.tokenizers.divae import is_divae_config

from conftest import REPO_ROOT, SHARED_DIR, subprocess_env

FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m"))
ATOL = 1e-4


def _divae_folders() -> list[Path]:
    root = FIXTURE_DIR / "tokenizers"
    if not root.is_dir():
        return []
    folders = []
    for config_path in sorted(root.glob("*/config.json")):
        config = json.loads(config_path.read_text())
        if "model_type" not in config and is_divae_config(config):
            folders.append(config_path.parent)
    return folders


def _fixture_params():
    folders = _divae_folders()
    if not folders:
        reason = f"no DiVAE fixture folders under {FIXTURE_DIR / 'tokenizers'} (set FOURM_ML4M_FIXTURES or provide ../shared)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(folder, id=folder.name) for folder in folders]


class DiVAECase:
    """One fixture folder: the model loaded from the released layout, its JSON and stored tensors."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / f"{folder.name}.json").read_text())
        self.io = load_file(folder / f"{folder.name}_io.safetensors")
        self.model = FourMDiVAE.from_pretrained(folder, **self.overrides())

    def overrides(self) -> dict:
        """Head counts and UNet parameters the preset names cannot give, from the JSON ``fixture_presets``."""
        presets, config, overrides = self.meta.get("fixture_presets", {}), self.meta["config"], {}
        encoder = presets.get(config["enc_type"])
        if encoder:
            overrides["encoder_num_heads"] = encoder["num_heads"]
        unet = presets.get(config["dec_type"])
        if unet:
            overrides.update(
                unet_patch_size=unet["patch_size"], unet_channel_mult=list(unet["channel_mult"]),
                unet_attention_resolutions=list(unet["attention_resolutions"]), unet_num_heads=unet["num_heads"],
            )
        return overrides


_CASES: dict[Path, DiVAECase] = {}


@pytest.fixture(params=_fixture_params())
def case(request) -> DiVAECase:
    if request.param not in _CASES:
        _CASES[request.param] = DiVAECase(request.param)
    return _CASES[request.param]


def _close(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = ATOL) -> None:
    assert tuple(actual.shape) == tuple(expected.shape), f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual.float() - expected.float()).abs().max().item()
    assert error <= atol, f"{name}: max abs error {error:.3g} > {atol}"


def _crop_like(tensor: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """The top-left crop the fixtures store (``[:, :, :32, :32]``)."""
    return tensor[..., : stored.shape[-2], : stored.shape[-1]]


def test_encoder_quantizer_and_ids(case):
    record = {}
    with torch.no_grad():
        ids = case.model.encode(case.io["in.x"], record)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, case.io["quant.ids"])
    for name, stored in case.io.items():
        if name.startswith(("enc.", "quant.")) and name != "quant.ids":
            _close(record[name], stored, name)


def test_schedule_matches_the_reference(case):
    stored = case.io["sched.alphas_cumprod"]
    ours = case.model.noise_scheduler.alphas_cumprod
    assert ours.dtype == torch.float32 and ours.shape == stored.shape
    # Exact where the construction is exact on every CPU; elsewhere float32 linspace rounding differs
    # between CPU kernels (see diffusion_sampling's docstring), 2e-7 against the fixture here.
    assert ours[-1].item() == 0.0 == stored[-1].item()
    assert ours[0].item() == stored[0].item()
    _close(ours, stored, "sched.alphas_cumprod", atol=1e-6)


def test_diffusers_schedule_is_the_reference_construction():
    """diffusers' zero-terminal-SNR rescale performs the reference's float32 steps (README 12.5) bit for bit."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    root = torch.cumprod(1 - betas, 0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alphas_bar = root**2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    expected = torch.cumprod(1 - (1 - alphas), 0)
    assert torch.equal(make_scheduler().alphas_cumprod, expected)


def test_ddim_decode_step_by_step(case):
    ddim = case.meta["ddim"]
    stored_timesteps = case.io["ddim.timesteps"]
    expected_timesteps = reference_timesteps(ddim["num_inference_steps"], spacing=ddim["timestep_spacing"])
    assert torch.equal(expected_timesteps, stored_timesteps)
    record = {}
    images = case.model.decode(
        case.io["quant.ids"], num_steps=ddim["num_inference_steps"], initial_noise=case.io["ddim.initial_noise"],
        timestep_spacing=ddim["timestep_spacing"], progress=False, intermediates=record,
    )
    assert torch.equal(record["ddim.timesteps"], stored_timesteps)
    _close(record["dec.codebook_lookup"], case.io["dec.codebook_lookup"], "dec.codebook_lookup")
    for step in range(len(stored_timesteps)):
        prefix = f"ddim.step{step}"
        _close(record[f"{prefix}.time_embedding"], case.io[f"{prefix}.time_embedding"], f"{prefix}.time_embedding")
        output, stored_crop = record[f"{prefix}.model_output"], case.io[f"{prefix}.model_output_crop"]
        _close(_crop_like(output, stored_crop), stored_crop, f"{prefix}.model_output_crop")
        # A sum over all pixels: independent 1e-4 errors would add up to about 1e-4 * sqrt(numel).
        sums = output.flatten(1).sum(1)
        _close(sums, case.io[f"{prefix}.model_output_sum"], f"{prefix}.model_output_sum", atol=ATOL * output[0].numel() ** 0.5)
        sample_crop = case.io[f"{prefix}.sample_crop"]
        _close(_crop_like(record[f"{prefix}.sample"], sample_crop), sample_crop, f"{prefix}.sample_crop")
    _close(images, case.io["out.decoded"], "out.decoded")


def test_batch_of_two_embeds_the_timestep_once_and_matches_batch_one(case):
    """Sampling embeds its one timestep once per step for the whole batch ([1, 128], README 12), and a
    batch of two decodes each sample as a batch of one does."""
    ids = case.io["quant.ids"]
    ids = torch.cat([ids, ids.flip(-1)])
    noise = case.io["ddim.initial_noise"]
    noise = torch.cat([noise, noise.flip(-2)])
    record = {}
    batched = case.model.decode(ids, num_steps=1, initial_noise=noise, progress=False, intermediates=record)
    stored = case.io["ddim.step0.time_embedding"]
    assert tuple(record["ddim.step0.time_embedding"].shape) == tuple(stored.shape) == (1, case.model.decoder.time_embed_dim)
    for row in range(2):
        single = case.model.decode(ids[row:row + 1], num_steps=1, initial_noise=noise[row:row + 1], progress=False)
        _close(batched[row:row + 1], single, f"batch-2 decode, sample {row}")


def test_training_style_call(case):
    io = case.io
    with torch.no_grad():
        output = case.model(io["train.in.x"], timesteps=io["train.timesteps"], noise=io["train.noise"])
    assert torch.equal(output.ids, io["train.ids"])
    assert torch.equal(output.timesteps, io["train.timesteps"])
    _close(output.noised_input, io["train.input_noised"], "train.input_noised")
    _close(output.decoder_output, io["train.decoder_output"], "train.decoder_output")
    expected_loss = torch.nn.functional.mse_loss(io["train.decoder_output"], io["train.in.x"])
    assert abs(output.loss.item() - expected_loss.item()) < 1e-5


def test_generic_entry_point_picks_divae(case):
    model = FourMTokenizerModel.from_pretrained(case.folder, **case.overrides())
    assert type(model) is FourMDiVAE
    assert model.config.model_type == "fourm_divae"


# ---- without fixtures: tiny models ----------------------------------------------------------------

def tiny_config(n_channels: int = 3, **kwargs) -> FourMDiVAEConfig:
    values = dict(
        enc_type="vit_tiny_d32_l1_h2_enc", dec_type="unet_patched_tiny_c32_r1", image_size=32, n_channels=n_channels,
        codebook_size=16, latent_dim=8, unet_channel_mult=[1, 2], unet_attention_resolutions=[2], num_inference_steps=2,
    )
    values.update(kwargs)
    return FourMDiVAEConfig(**values)


def tiny_model(n_channels: int = 3, seed: int = 0, **kwargs) -> FourMDiVAE:
    torch.manual_seed(seed)
    model = FourMDiVAE(tiny_config(n_channels, **kwargs)).eval()
    with torch.no_grad():  # the UNet's zero-initialised output layers would make every decode 0
        for parameter in model.decoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("n_channels", [1, 3], ids=["depth_edge_1ch", "rgb_normal_3ch"])
def test_channel_variants_encode_decode_and_train(n_channels):
    model = tiny_model(n_channels)
    images = torch.rand(2, n_channels, 32, 32) * 2 - 1
    ids = model.encode(images)
    assert ids.shape == (2, 2, 2) and ids.dtype == torch.int64
    decoded = model.decode(ids, num_steps=2, generator=0, progress=False)
    assert decoded.shape == (2, n_channels, 32, 32) and decoded.dtype == torch.float32
    assert torch.isfinite(decoded).all() and decoded.abs().sum() > 0
    output = model(images, generator=torch.Generator().manual_seed(1))
    output.loss.backward()
    assert model.encoder.proj.weight.grad is not None  # the straight-through estimator reaches the encoder


def test_sampling_options():
    model = tiny_model()
    ids = torch.randint(0, 16, (1, 2, 2))
    first = model.decode(ids, num_steps=1, generator=torch.Generator().manual_seed(5), progress=False)
    again = model.decode(ids, num_steps=1, generator=5, progress=False)
    other = model.decode(ids, num_steps=1, generator=6, progress=False)
    assert torch.equal(first, again) and not torch.equal(first, other)
    calls = []
    original = model.denoise
    model.denoise = lambda *args, **kwargs: calls.append(int(args[1])) or original(*args, **kwargs)
    model.decode(ids, num_steps=3, generator=0, progress=False)
    assert calls == [999, 666, 333, 0]  # integer trailing spacing: 3 steps = 4 model calls
    calls.clear()
    model.decode(ids, num_steps=3, generator=0, progress=False, timestep_spacing="leading")
    assert calls == [666, 333, 0]
    bigger = model.decode(ids, num_steps=1, generator=0, image_size=(64, 32), progress=False)
    assert bigger.shape == (1, 3, 64, 32)
    # DDPM (the reference's other scheduler): stochastic, reproducible with a seed.
    ddpm = tiny_model(scheduler="ddpm")
    sample = ddpm.decode(ids, num_steps=2, generator=3, progress=False)
    assert torch.equal(sample, ddpm.decode(ids, num_steps=2, generator=3, progress=False))
    assert torch.isfinite(sample).all()


def test_bfloat16_and_channels_last_decodes_follow_the_float32_decode():
    model = tiny_model()
    ids = torch.randint(0, 16, (2, 2, 2), generator=torch.Generator().manual_seed(2))
    expected = model.decode(ids, num_steps=2, generator=3, progress=False)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert nhwc.decoder.out[2].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc.decode(ids, num_steps=2, generator=3, progress=False), expected, rtol=0, atol=1e-5)
    half = copy.deepcopy(model).to(torch.bfloat16)
    record = {}
    decoded = half.decode(ids, num_steps=2, generator=3, progress=False, intermediates=record)
    assert decoded.dtype == torch.float32  # the sampling loop stays in float32; only the UNet calls run in bf16
    assert record["ddim.step0.model_output"].dtype == torch.bfloat16
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    error = (decoded - expected).abs().max().item()
    assert 0 < error <= 0.05 * expected.abs().max().item(), error


def test_reference_timesteps():
    assert reference_timesteps(3).tolist() == [999, 666, 333, 0]
    assert reference_timesteps(4).tolist() == [999, 749, 499, 249]
    assert reference_timesteps(1).tolist() == [999]
    assert reference_timesteps(3, spacing="linspace").tolist() == [999, 499, 0]
    with pytest.raises(ValueError, match="num_steps"):
        reference_timesteps(0)
    with pytest.raises(ValueError, match="spacing"):
        reference_timesteps(3, spacing="karras")


def test_released_preset_sizes():
    config = FourMDiVAEConfig(codebook_size=16384)
    assert (config.encoder_dim, config.encoder_depth, config.encoder_num_heads) == (768, 12, 12)
    assert (config.unet_model_channels, config.unet_num_res_blocks) == (256, 3)
    assert config.unet_channel_mult == [1, 2, 2, 2] and config.unet_attention_resolutions == [4, 8]
    with torch.device("meta"):
        model = FourMDiVAE(config)
    state = model.state_dict()
    assert state["decoder.input_blocks.0.0.weight"].shape == (256, 16 * 3 + 32, 3, 3)
    assert len(model.decoder.input_blocks) == 16 and len(model.decoder.output_blocks) == 16
    assert state["decoder.out.2.weight"].shape == (48, 256, 3, 3)
    assert state["quantize._codebook.embed"].shape == (16384, 32)


def test_save_and_load_round_trip_in_a_fresh_process(tmp_path):
    model = tiny_model(1)
    model.save_pretrained(tmp_path / "divae")
    ids = torch.randint(0, 16, (1, 2, 2))
    expected = model.decode(ids, num_steps=2, generator=7, progress=False)
    torch.save(ids, tmp_path / "ids.pt")
    script = (
        "import sys, torch, fourm_hf\n"
        "from transformers import AutoModel\n"
        "model = AutoModel.from_pretrained(sys.argv[1])\n"
        "assert type(model).__name__ == 'FourMDiVAE', type(model)\n"
        "torch.save(model.decode(torch.load(sys.argv[2]), num_steps=2, generator=7, progress=False), sys.argv[3])\n"
    )
    env = subprocess_env()
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "divae"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        check=True, env=env, timeout=300,
    )
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=1e-5)  # thread counts may differ
    reloaded = AutoModel.from_pretrained(tmp_path / "divae")
    assert isinstance(reloaded, FourMDiVAE) and reloaded.config.n_channels == 1


def test_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        model.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model.encode(torch.zeros(1, 3, 40, 40))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.encode([[0.0]])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 16\)"):
        model.decode(torch.full((1, 2, 2), 16), progress=False)
    with pytest.raises(ValueError, match="ids must be an integer tensor"):
        model.decode(torch.zeros(1, 2, 2), progress=False)
    with pytest.raises(ValueError, match="initial_noise must be a tensor of shape"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long), initial_noise=torch.zeros(1, 3, 16, 16), progress=False)
    with pytest.raises(ValueError, match="multiple of 8"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long), image_size=36, progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long), num_steps=0, progress=False)
    with pytest.raises(TypeError, match="generator"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long), generator="seed", progress=False)
    with pytest.raises(ValueError, match="timesteps must be 2 integers"):
        model(torch.zeros(2, 3, 32, 32), timesteps=torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="unknown dec_type"):
        tiny_config(dec_type="convnext_unet")
    with pytest.raises(ValueError, match="UViT"):
        tiny_config(dec_type="uvit_b")
    with pytest.raises(ValueError, match="scheduler must be one of"):
        tiny_config(scheduler="euler")
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        tiny_config(beta_schedule="cosine")
    with pytest.raises(ValueError, match="disagrees with preset"):
        tiny_config(unet_model_channels=64)


def test_released_folder_errors(tmp_path):
    model = tiny_model()
    folder = tmp_path / "released"
    folder.mkdir()
    released = {key: getattr(model.config, key) for key in sorted(model.config.released_keys)}
    (folder / "config.json").write_text(json.dumps(released))
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    loaded = FourMDiVAE.from_pretrained(folder, encoder_num_heads=2, unet_channel_mult=[1, 2], unet_attention_resolutions=[2])
    ids = torch.randint(0, 16, (1, 2, 2))
    # same weights and noise; not bit-equal on every CPU (loaded tensors can take other kernels: 1.5e-6 seen)
    torch.testing.assert_close(loaded.decode(ids, num_steps=1, generator=0, progress=False),
                               model.decode(ids, num_steps=1, generator=0, progress=False), rtol=0, atol=1e-5)
    # a missing weight
    save_file({k: v for k, v in state.items() if k != "decoder.out.2.bias"}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="decoder.out.2.bias"):
        FourMDiVAE.from_pretrained(folder, encoder_num_heads=2, unet_channel_mult=[1, 2], unet_attention_resolutions=[2])
    # an unknown config key
    (folder / "config.json").write_text(json.dumps({**released, "guidance_mode": "x"}))
    with pytest.raises(ValueError, match="guidance_mode"):
        FourMDiVAE.from_pretrained(folder)
    # a folder of another family
    (folder / "config.json").write_text(json.dumps({"enc_type": "vit_b_enc", "dec_type": "vit_b_dec", "image_size": 448}))
    with pytest.raises(ValueError, match="not a DiVAE"):
        FourMDiVAE.from_pretrained(folder)
