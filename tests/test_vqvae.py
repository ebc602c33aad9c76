"""VQ-VAE tokenizers: shapes and units per kind, FSQ, usage stats, save/load, training, resume, bad input."""

import json
import math
import os
import subprocess
import sys

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf.cli import main as cli_main
from fourm_hf.tokenizers.train_vqvae import evaluate_model, horizontal_flip, resize_batch, split_dataset, train_tokenizer
from fourm_hf.tokenizers.vqvae import (
    FSQ_LEVELS,
    FiniteScalarQuantizer,
    FourMVQVAE,
    FourMVQVAEConfig,
    codebook_usage_stats,
)

SIZE, PATCH, NUM_CLASSES, FEATURE_CHANNELS = 16, 4, 5, 6
KINDS = ("rgb", "depth", "normal", "semseg", "feature")


def tiny_config(kind, **overrides):
    options = dict(input_kind=kind, image_size=SIZE, patch_size=PATCH, vocab_size=256, base_channels=8, max_channels=16)
    if kind == "semseg":
        options["num_classes"] = NUM_CLASSES
    if kind == "feature":
        options["num_channels"] = FEATURE_CHANNELS
    options.update(overrides)
    return FourMVQVAEConfig(**options)


def tiny_model(kind, seed=0, **overrides):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FourMVQVAE(tiny_config(kind, **overrides)).eval()


def example_inputs(kind, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if kind == "semseg":
        return torch.randint(0, NUM_CLASSES, (batch, SIZE, SIZE), generator=generator)
    if kind == "depth":
        return 0.5 + 5 * torch.rand(batch, 1, SIZE, SIZE, generator=generator)
    if kind == "normal":
        return torch.nn.functional.normalize(torch.randn(batch, 3, SIZE, SIZE, generator=generator), dim=1)
    if kind == "feature":
        return torch.randn(batch, FEATURE_CHANNELS, SIZE, SIZE, generator=generator)
    return torch.rand(batch, 3, SIZE, SIZE, generator=generator) * 2 - 1


def write_scene_dataset(path, num_rows=48, size=SIZE, seed=0):
    """Scene-schema dataset of random boxes and discs in front of a wall (exact depth/normals/classes)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rows = {"rgb": [], "depth": [], "normal": [], "semseg": [], "caption": []}
    for _ in range(num_rows):
        rgb = np.full((size, size, 3), 40, np.uint8)
        depth = np.full((size, size), 6.0, np.float32)
        normal = np.zeros((size, size, 3), np.float32)
        normal[..., 2] = 1.0
        semseg = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(1, 4)):
            class_id, distance = int(rng.integers(1, NUM_CLASSES)), float(rng.uniform(1.0, 4.0))
            color = rng.integers(60, 255, 3).astype(np.uint8)
            cx, cy, radius = rng.uniform(3, size - 3, 2).tolist() + [float(rng.uniform(2, size / 3))]
            if rng.random() < 0.5:  # box: flat face towards the camera
                mask = (np.abs(xx - cx) < radius) & (np.abs(yy - cy) < radius)
                local_normal = np.broadcast_to(np.array([0, 0, 1], np.float32), (size, size, 3))
            else:  # disc shaded like a sphere
                dx, dy = (xx - cx) / radius, (yy - cy) / radius
                mask = dx**2 + dy**2 < 1
                dz = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
                local_normal = np.stack([dx, -dy, dz], -1)
                local_normal = local_normal / np.linalg.norm(local_normal, axis=-1, keepdims=True).clip(1e-6)
            rgb[mask], depth[mask], normal[mask], semseg[mask] = color, distance, local_normal[mask], class_id
        rows["rgb"].append(PIL.Image.fromarray(rgb))
        rows["depth"].append(depth)
        rows["normal"].append(normal)
        rows["semseg"].append(semseg)
        rows["caption"].append("a scene")
    features = datasets.Features(
        {
            "rgb": datasets.Image(),
            "depth": datasets.Array2D((size, size), "float32"),
            "normal": datasets.Array3D((size, size, 3), "float32"),
            "semseg": datasets.Array2D((size, size), "uint8"),
            "caption": datasets.Value("string"),
        }
    )
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """The test machines are small and shared: two threads contending for a busy core are far
    slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def scene_dataset(tmp_path_factory):
    return write_scene_dataset(tmp_path_factory.mktemp("scenes") / "scenes")


TRAIN_OPTIONS = dict(batch_size=8, lr=3e-3, patch_size=PATCH, vocab_size=256, preset="tiny", warmup_steps=2, eval_size=8, progress=False)


# ---- model API -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_shapes_dtypes_and_units(kind):
    model = tiny_model(kind)
    inputs = example_inputs(kind)
    with torch.no_grad():
        ids = model.encode(inputs)
        decoded = model.decode(ids)
        output = model(inputs)
    grid = SIZE // PATCH
    assert ids.shape == (2, grid, grid) and ids.dtype == torch.int64
    assert 0 <= ids.min() and ids.max() < model.config.vocab_size
    assert torch.equal(output.ids, ids)
    assert torch.allclose(output.reconstruction.float(), decoded.float(), atol=1e-5)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    if kind == "semseg":
        assert decoded.shape == (2, SIZE, SIZE) and decoded.dtype == torch.int64
        assert 0 <= decoded.min() and decoded.max() < NUM_CLASSES
        assert output.prediction.shape == (2, NUM_CLASSES, SIZE, SIZE)
    else:
        channels = {"rgb": 3, "depth": 1, "normal": 3, "feature": FEATURE_CHANNELS}[kind]
        assert decoded.shape == (2, channels, SIZE, SIZE) and decoded.dtype == torch.float32
    if kind == "rgb":
        assert decoded.min() >= -1 and decoded.max() <= 1
    if kind == "depth":
        assert decoded.min() > 0
    if kind == "normal":
        assert torch.allclose(decoded.norm(dim=1), torch.ones(2, SIZE, SIZE), atol=1e-4)


def test_depth_normalisation_round_trips_to_metres():
    model = tiny_model("depth", depth_log_mean=math.log(3.0), depth_log_std=0.7)
    depth = example_inputs("depth")
    normalised = model.normalize(depth)
    assert torch.allclose(normalised, (depth.log() - math.log(3.0)) / 0.7)
    assert torch.allclose(model.denormalize(normalised), depth, rtol=1e-5)


@pytest.mark.parametrize("kind", ("rgb", "depth", "normal", "semseg"))
def test_preprocess_postprocess_round_trip(kind):
    model = tiny_model(kind)
    rng = np.random.default_rng(0)
    if kind == "rgb":
        arrays = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2)]
        arrays[1] = PIL.Image.fromarray(arrays[1])
    elif kind == "depth":
        arrays = rng.uniform(0.5, 8, (2, SIZE, SIZE)).astype(np.float32)
    elif kind == "normal":
        arrays = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
        arrays /= np.linalg.norm(arrays, axis=-1, keepdims=True)
    else:
        arrays = rng.integers(0, NUM_CLASSES, (2, SIZE, SIZE)).astype(np.uint8)
    batch = model.preprocess(arrays)
    expected = np.stack([np.asarray(a) for a in arrays]) if isinstance(arrays, list) else arrays
    if kind == "semseg":
        assert batch.dtype == torch.int64
    np.testing.assert_allclose(model.postprocess(batch if kind != "depth" else batch), expected, atol=1e-6)


# ---- quantizer and usage stats --------------------------------------------------------------------
def test_fsq_level_table_products():
    for vocab_size, levels in FSQ_LEVELS.items():
        assert math.prod(levels) == vocab_size
        assert FourMVQVAEConfig(vocab_size=vocab_size).fsq_levels == list(levels)
    assert FourMVQVAEConfig(fsq_levels=[7, 5, 5]).vocab_size == 175


def test_fsq_ids_round_trip_and_stay_in_range():
    quantizer = FiniteScalarQuantizer([8, 5, 4])
    all_ids = torch.arange(160).view(1, 10, 16)
    codes = quantizer.ids_to_codes(all_ids)
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(quantizer.codes_to_ids(codes), all_ids)
    # extreme latents still land inside the vocabulary
    latents = torch.randn(4, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 100
    ids = quantizer.codes_to_ids(quantizer.quantize(latents))
    assert ids.min() == 0 and ids.max() == 159
    # and every id is reachable from latents of moderate size
    latents = torch.randn(4, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 1.5
    assert torch.unique(quantizer.codes_to_ids(quantizer.quantize(latents))).numel() == 160
    # zero latent is the centre of the grid (digit L // 2 on each axis)
    assert quantizer.codes_to_ids(quantizer.quantize(torch.zeros(1, 3, 1, 1))).item() == 4 + 2 * 8 + 2 * 40


def test_fsq_passes_gradients_straight_through():
    model = tiny_model("rgb").train()
    model(example_inputs("rgb")).loss.backward()
    assert model.encoder.stem.weight.grad is not None and model.encoder.stem.weight.grad.abs().sum() > 0


def test_codebook_usage_stats_on_constructed_ids():
    fraction, perplexity = codebook_usage_stats(torch.tensor([[0, 0], [1, 1]]), vocab_size=4)
    assert fraction.item() == pytest.approx(0.5) and perplexity.item() == pytest.approx(2.0)
    fraction, perplexity = codebook_usage_stats(torch.full((3, 4, 4), 7), vocab_size=16)
    assert fraction.item() == pytest.approx(1 / 16) and perplexity.item() == pytest.approx(1.0)
    fraction, perplexity = codebook_usage_stats(torch.arange(32) % 16, vocab_size=16)
    assert fraction.item() == pytest.approx(1.0) and perplexity.item() == pytest.approx(16.0, rel=1e-5)
    # 3:1 split: perplexity exp(H) with H = -(.75 ln .75 + .25 ln .25)
    fraction, perplexity = codebook_usage_stats(torch.tensor([2, 2, 2, 5]), vocab_size=8)
    assert perplexity.item() == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-5)


# ---- save / load ----------------------------------------------------------------------------------
def test_save_load_through_auto_classes_same_and_fresh_process(tmp_path):
    model = tiny_model("semseg", seed=3)
    inputs = example_inputs("semseg", seed=1)
    ids = model.encode(inputs)
    assert torch.unique(ids).numel() > 1
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "fourm_vqvae"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is FourMVQVAE and loaded.config.num_classes == NUM_CLASSES
    assert torch.equal(loaded.encode(inputs), ids)
    assert torch.equal(loaded.decode(ids), model.decode(ids))

    torch.save(inputs, tmp_path / "inputs.pt")
    script = (
        "import json, sys, torch, fourm_hf\n"
        "from transformers import AutoModel\n"
        "model = AutoModel.from_pretrained(sys.argv[1]).eval()\n"
        "ids = model.encode(torch.load(sys.argv[1] + '/inputs.pt'))\n"
        "print(json.dumps(ids.tolist()))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True, env=env)
    assert torch.equal(torch.tensor(json.loads(result.stdout.strip().splitlines()[-1])), ids)


# ---- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", ("rgb", "depth", "normal", "semseg"))
def test_training_lowers_held_out_loss(scene_dataset, tmp_path, modality):
    summary = train_tokenizer(modality, scene_dataset, tmp_path, steps=40, eval_every=1000, **TRAIN_OPTIONS)
    assert summary["finished"]
    trained = AutoModel.from_pretrained(tmp_path)
    assert trained.config.target == modality and trained.config.image_size == SIZE
    if modality == "semseg":
        assert trained.config.num_classes == NUM_CLASSES  # inferred from the data (classes 0..4 occur)
    if modality == "depth":  # log-depth statistics come from the data (wall at 6 m, objects 1-4 m)
        assert math.log(1.0) < trained.config.depth_log_mean < math.log(6.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = FourMVQVAE(trained.config)
    _, held_out = split_dataset(datasets.load_from_disk(str(scene_dataset)), 8)
    held_out = held_out.select_columns([modality]).with_format("numpy")
    before = evaluate_model(untrained, held_out, modality, 8)["loss"]
    after = evaluate_model(trained, held_out, modality, 8)["loss"]
    assert after < 0.6 * before, (before, after)
    assert json.loads((tmp_path / "eval_results.json").read_text())["loss"] == pytest.approx(after, rel=1e-4)


def test_resume_equals_uninterrupted_run(scene_dataset, tmp_path):
    options = dict(TRAIN_OPTIONS, steps=10, checkpoint_every=3, eval_every=4)
    train_tokenizer("normal", scene_dataset, tmp_path / "straight", **options)
    interrupted = train_tokenizer("normal", scene_dataset, tmp_path / "resumed", stop_after=5, **options)
    assert not interrupted["finished"] and interrupted["step"] == 5
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="--resume"):
        train_tokenizer("normal", scene_dataset, tmp_path / "resumed", **options)
    resumed = train_tokenizer("normal", scene_dataset, tmp_path / "resumed", resume=True, **options)
    assert resumed["finished"] and resumed["step"] == 10
    weights_a = load_file(tmp_path / "straight" / "model.safetensors")
    weights_b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    state_a = json.loads((tmp_path / "straight" / "trainer_state.json").read_text())
    state_b = json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())
    assert state_a == state_b and [h["step"] for h in state_a["history"]] == [4, 8, 10]
    # and training changed the weights (resume is not trivially equal to the init)
    assert not torch.equal(weights_a["decoder.conv_out.weight"], tiny_model("normal").decoder.conv_out.weight)


def test_cli_train_tokenizer(scene_dataset, tmp_path):
    out = tmp_path / "tok_rgb"
    code = cli_main(["train-tokenizer", "--modality", "rgb", "--dataset", str(scene_dataset), "--out", str(out),
                     "--steps", "2", "--batch-size", "4", "--preset", "tiny", "--patch-size", "4", "--vocab-size", "512",
                     "--eval-size", "8", "--image-size", "8"])  # fmt: skip
    assert code == 0
    model = AutoModel.from_pretrained(out)
    assert model.config.image_size == 8 and model.config.vocab_size == 512 and model.config.modality == "tok_rgb"


def test_flip_mirrors_normals_and_resize_keeps_class_ids():
    normals = example_inputs("normal")
    flipped = horizontal_flip(normals, torch.tensor([True, False]), "normal")
    assert torch.equal(flipped[1], normals[1])
    assert torch.equal(flipped[0, 0], -normals[0, 0].flip(-1))  # x (right) component changes sign
    assert torch.equal(flipped[0, 1:], normals[0, 1:].flip(-1))
    classes = example_inputs("semseg")
    resized = resize_batch(classes, SIZE // 2, "semseg")
    assert resized.dtype == torch.int64 and torch.equal(resized, classes[:, ::2, ::2])
    smaller = resize_batch(normals, SIZE // 2, "normal")
    assert smaller.shape == (2, 3, SIZE // 2, SIZE // 2)
    assert torch.allclose(smaller.norm(dim=1), torch.ones(2, SIZE // 2, SIZE // 2), atol=1e-5)


def test_train_rejects_unknown_column(scene_dataset, tmp_path):
    with pytest.raises(ValueError, match="'albedo' is not a column"):
        train_tokenizer("albedo", scene_dataset, tmp_path, steps=1, **TRAIN_OPTIONS)


# ---- bad input ------------------------------------------------------------------------------------
BAD_INPUTS = [
    ("rgb", lambda: torch.zeros(2, 4, SIZE, SIZE), "3 channel"),
    ("normal", lambda: torch.zeros(2, 1, SIZE, SIZE), "3 channel"),
    ("depth", lambda: torch.ones(2, 3, SIZE, SIZE), "1 channel"),
    ("rgb", lambda: torch.zeros(2, 3, SIZE + 1, SIZE + 1), "spatial size"),
    ("rgb", lambda: torch.zeros(2, 3, 2 * SIZE, 2 * SIZE), "spatial size"),  # a multiple of the patch, not the configured size
    ("depth", lambda: torch.ones(2, 1, SIZE, SIZE).index_put_((torch.tensor([0]),) * 4, torch.tensor(float("nan"))), "NaN"),
    ("depth", lambda: torch.zeros(2, 1, SIZE, SIZE), "> 0"),
    ("semseg", lambda: torch.full((2, SIZE, SIZE), NUM_CLASSES), "num_classes"),
    ("semseg", lambda: torch.full((2, SIZE, SIZE), -1), r"\[0, 5\)"),
    ("semseg", lambda: torch.zeros(2, SIZE, SIZE, dtype=torch.float32), "integer class ids"),
    ("rgb", lambda: torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), "floating-point"),
    ("rgb", lambda: torch.full((2, 3, SIZE, SIZE), 255.0), r"\[-1, 1\]"),
    ("semseg", lambda: torch.zeros(2, 1, SIZE, SIZE, dtype=torch.long), r"\(B, H, W\)"),
    ("feature", lambda: np.zeros((2, FEATURE_CHANNELS, SIZE, SIZE), np.float32), "torch.Tensor"),
]


@pytest.mark.parametrize("kind, make_input, message", BAD_INPUTS)
def test_bad_inputs_raise_value_error_naming_the_modality(kind, make_input, message):
    model = tiny_model(kind)
    for method in (model.encode, model.forward):
        with pytest.raises(ValueError, match=message) as error:
            method(make_input())
        assert f"tok_{kind}" in str(error.value)


def test_bad_ids_and_arrays_raise_value_error():
    model = tiny_model("depth")
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        model.decode(torch.full((1, 4, 4), 256))
    with pytest.raises(ValueError, match=r"shape \(B, 4, 4\)"):
        model.decode(torch.zeros(1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.decode(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="floating point"):
        model.preprocess(np.ones((SIZE, SIZE), np.int32))
    with pytest.raises(ValueError, match="uint8"):
        tiny_model("rgb").preprocess(np.zeros((SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="2 dims per sample"):
        model.preprocess(np.ones((1, 1, SIZE, SIZE), np.float32))


def test_bad_configs_raise_value_error():
    with pytest.raises(ValueError, match="no FSQ level set"):
        FourMVQVAEConfig(vocab_size=1000)
    with pytest.raises(ValueError, match="power of two"):
        FourMVQVAEConfig(patch_size=6, image_size=36)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        FourMVQVAEConfig(patch_size=8, image_size=60)
    with pytest.raises(ValueError, match="num_classes"):
        FourMVQVAEConfig(input_kind="semseg")
    with pytest.raises(ValueError, match="num_channels"):
        FourMVQVAEConfig(input_kind="feature")
    with pytest.raises(ValueError, match="3 channels"):
        FourMVQVAEConfig(input_kind="normal", num_channels=4)
    with pytest.raises(ValueError, match="input_kind"):
        FourMVQVAEConfig(input_kind="audio")
