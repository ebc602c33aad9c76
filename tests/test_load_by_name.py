"""Released 4M models by name against the loopback Hub: fixture trunks and tokenizers are uploaded under
catalogue entries this module registers, then loaded by repo id as a user would load ``EPFL-VILAB/4M-21_XL``.

Fixture trunks are discovered under ``../shared/fixtures/ml4m`` (released folders, and ``X.safetensors`` with
an ``X.json`` holding ``fm_config``); tokenizer fixtures under ``tokenizers/`` are paired with a trunk where
the fixture tables say they fit (vocabulary and type); image outputs no fixture tokenizer fits get a tiny
random ViT VQ-VAE in the released layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DIR, shared_path
from hub_server import HubServer, huggingface_hub_pointed_at

ML4M = SHARED_DIR / "fixtures" / "ml4m"
TOKEN = "hf_by_name_token"
NAMESPACE = "fourm-tester"


# ---- discovery ---------------------------------------------------------------------------------------------
def discover_trunks() -> dict[str, tuple[dict, dict, Path]]:
    """name -> (reference config, fixture table, weights file) for every fixture trunk."""
    found = {}
    if not ML4M.is_dir():
        return found
    for folder in sorted(p for p in ML4M.iterdir() if p.is_dir()):
        config, table = folder / "config.json", folder / f"{folder.name}.json"
        if config.is_file() and table.is_file() and (folder / "model.safetensors").is_file():
            reference = json.loads(config.read_text())
            if "domains_in" in reference:
                found[folder.name] = (reference, json.loads(table.read_text()), folder / "model.safetensors")
    for weights in sorted(ML4M.glob("*.safetensors")):
        table = weights.with_suffix(".json")
        if table.is_file() and "fm_config" in json.loads(table.read_text()):
            data = json.loads(table.read_text())
            found[weights.stem] = (data["fm_config"], data, weights)
    return found


TRUNKS = discover_trunks()
NO_TRUNKS = [pytest.param("none", marks=pytest.mark.skip(reason=f"no reference fixtures under {ML4M}"))]


def write_released_folder(name: str, folder: Path) -> Path:
    """The trunk as a released repo holds it: config.json (the reference's) + model.safetensors."""
    reference, _, weights = TRUNKS[name]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(reference))
    shutil.copy(weights, folder / "model.safetensors")
    return folder


def text_tokenizer_file(table: dict) -> Path:
    from fourm_hf.text.tokenization_fourm import FourMTextTokenizer

    wanted = table["modalities"]["caption"]["vocab_size"]
    for path in sorted(ML4M.rglob("text_tokenizer*.json")):
        if len(FourMTextTokenizer(tokenizer_file=str(path))) == wanted:
            return path
    pytest.skip(f"no text tokenizer fixture of {wanted} ids under {ML4M}")


def served_trunk() -> str | None:
    """The trunk with the most main-grid image outputs (the pipeline tests' model)."""
    def outputs(name):
        return len(main_grid_outputs(TRUNKS[name][1]))
    names = [name for name in TRUNKS if outputs(name)]
    return max(names, key=outputs) if names else None


def main_grid_outputs(table: dict) -> dict[str, dict]:
    """Image-token outputs on the trunk's main grid whose kind a tiny tokenizer can stand in for."""
    size = int(table["fm_config"].get("image_size", 224))
    found = {}
    for domain, entry in table["modalities"].items():
        name = domain.removesuffix(f"@{size}")
        if (entry["type"] == "img" and entry["decoder"] and entry.get("input_size") == size
                and name in ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg")):
            found[name] = entry
    return found


def build_tokenizers(table: dict, root: Path) -> dict[str, Path]:
    """``{modality: released-layout folder}`` for every main-grid output: the fitting fixture, else tiny random."""
    from fourm_hf.tokenizers.released_layout import save_in_released_layout
    from fourm_hf.tokenizers.vit_vqvae import FourMViTVQVAE, FourMViTVQVAEConfig

    from fourm_hf.ml4m.assembly import modality_from_released_name

    folders = {}
    for fixture in sorted(p for p in (ML4M / "tokenizers").iterdir() if (p / "config.json").is_file()):
        released = json.loads((fixture / f"{fixture.name}.json").read_text())["released_counterpart"]
        modality, config = modality_from_released_name(released), json.loads((fixture / "config.json").read_text())
        entry = main_grid_outputs(table).get(modality)
        if entry and entry["vocab_size"] == config["codebook_size"] and config.get("patch_proj", True):
            folders[modality] = root / released.split("/")[1]
            shutil.copytree(fixture, folders[modality], ignore=lambda _, names: [n for n in names if n.startswith(fixture.name)])
    channels = {"tok_rgb": 3, "tok_depth": 1, "tok_normal": 3}
    for seed, (name, entry) in enumerate(sorted(main_grid_outputs(table).items())):
        if name in folders or name not in channels:
            continue
        torch.manual_seed(seed)
        model = FourMViTVQVAE(FourMViTVQVAEConfig(
            enc_type="vit_tiny_d32_l1_h2_enc", dec_type="vit_tiny_d32_l1_h2_dec", image_size=entry["input_size"],
            patch_size=entry["patch_size"], codebook_size=entry["vocab_size"], latent_dim=8, n_channels=channels[name]))
        folders[name] = root / f"4M_tokenizers_{name}_tiny"
        save_in_released_layout(model.eval(), folders[name])
    return folders


def sequence_tokenizer_fixtures() -> dict[str, Path]:
    """``{modality: fixture folder}`` of the tokenizer fixtures whose released repo serves a sequence's ids
    (4M-21's ``human_poses`` / ``sam_instance``)."""
    from fourm_hf.ml4m.assembly import modality_from_released_name
    from fourm_hf.processing.sequence_tokens import SEQUENCE_TOKENIZER_MODALITIES

    found = {}
    for fixture in sorted(p for p in (ML4M / "tokenizers").iterdir() if (p / "config.json").is_file()):
        released = json.loads((fixture / f"{fixture.name}.json").read_text())["released_counterpart"]
        if modality_from_released_name(released) in SEQUENCE_TOKENIZER_MODALITIES:
            found[modality_from_released_name(released)] = fixture
    return found


def tiny_t5_encoder(folder: Path, table: dict, text: Path) -> Path:
    """A tiny random T5EncoderModel of the trunk's t5_caption width, with the fixture text tokenizer as its tokenizer."""
    from safetensors import safe_open
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    _, _, weights = next(value for value in TRUNKS.values() if value[1] is table)
    with safe_open(str(weights), "pt") as handle:
        width = handle.get_slice("encoder_embeddings.t5_caption.emb_proj.weight").get_shape()[1]
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(text), pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
                   ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- the loopback Hub with the fixtures under registered catalogue entries ----------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(token=TOKEN) as server, huggingface_hub_pointed_at(server, tmp_path_factory.mktemp("hf")):
        yield server


def upload(hub: HubServer, folder: Path, name: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=TOKEN)
    repo_id = api.create_repo(f"{NAMESPACE}/{name}", exist_ok=True).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="upload")
    return repo_id


@pytest.fixture(scope="module")
def released(hub, tmp_path_factory):
    """The served trunk and its tokenizers on the Hub, registered in the catalogue: a dict of what was made."""
    from fourm_hf.ml4m.catalogue import ReleasedModel, register_released_model, unregister_released_model
    from fourm_hf.ml4m.released_processor import vocabulary_fingerprint
    from fourm_hf.text.tokenization_fourm import FourMTextTokenizer

    shared_path("fixtures", "ml4m")
    name = served_trunk()
    if name is None:
        pytest.skip(f"no fixture trunk under {ML4M} has RGB/depth/normal/semseg outputs")
    root = tmp_path_factory.mktemp("released")
    table = TRUNKS[name][1]
    repo_id = upload(hub, write_released_folder(name, root / name), f"{name}-released")
    folders = build_tokenizers(table, root / "tokenizers")
    tokenizers = {modality: upload(hub, folder, folder.name) for modality, folder in folders.items()}
    sequences = {modality: fixture for modality, fixture in sequence_tokenizer_fixtures().items()
                 if modality in table["modalities"] and table["modalities"][modality]["decoder"]}
    for modality, fixture in sequences.items():
        folder = root / "tokenizers" / fixture.name
        folder.mkdir(parents=True)
        for file in ("config.json", "model.safetensors"):
            shutil.copy(fixture / file, folder / file)
        tokenizers[modality] = upload(hub, folder, f"{fixture.name}-released")
    text = text_tokenizer_file(table)
    semseg = folders.get("tok_semseg")
    t5 = tiny_t5_encoder(root / "t5", table, text) if "t5_caption" in table["modalities"] else None
    entry = register_released_model(ReleasedModel(
        repo_id, "fixture", tokenizers, text_tokenizer=str(text), t5_encoder=None if t5 is None else str(t5),
        text_fingerprint=vocabulary_fingerprint(FourMTextTokenizer(tokenizer_file=str(text))),
        semseg_classes=json.loads((semseg / "config.json").read_text())["n_labels"] if semseg else None))
    yield {"trunk": name, "repo_id": repo_id, "entry": entry, "tokenizers": tokenizers, "text": text, "table": table,
           "sequence_fixtures": sequences}
    unregister_released_model(repo_id)


def tokenizer_requests(hub: HubServer, tokenizers: dict[str, str], since: int = 0) -> dict[str, int]:
    """How many downloads (file metadata or bytes) each tokenizer repo answered after request number ``since``."""
    return {modality: sum(method in ("GET", "HEAD") and path.startswith(f"/{repo}/resolve/")
                          for method, path in hub.requests[since:]) for modality, repo in tokenizers.items()}


# ---- conversion on load -----------------------------------------------------------------------------------
@pytest.mark.parametrize("trunk_name", sorted(TRUNKS) or NO_TRUNKS)
def test_a_released_folder_loads_as_convert_ml4m_converts_it(trunk_name, tmp_path):
    from fourm_hf import FourMModel
    from fourm_hf.ml4m.conversion import convert_ml4m_checkpoint

    folder = write_released_folder(trunk_name, tmp_path / "released")
    convert_ml4m_checkpoint(folder / "model.safetensors", folder / "config.json", tmp_path / "converted")
    expected = FourMModel.from_pretrained(str(tmp_path / "converted")).state_dict()
    loaded = FourMModel.from_pretrained(str(folder))
    assert not loaded.training
    got = loaded.state_dict()
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_by_name_converts_once_then_loads_the_cached_safetensors(released, hub, monkeypatch):
    import huggingface_hub.constants as constants

    from fourm_hf import FourMModel
    from fourm_hf.ml4m import released_loading

    conversions = []
    convert = released_loading.load_reference_model

    def counting(*args, **kwargs):  # the real conversion, counted
        conversions.append(args)
        return convert(*args, **kwargs)

    monkeypatch.setattr(released_loading, "load_reference_model", counting)
    first = FourMModel.from_pretrained(released["repo_id"])
    second = FourMModel.from_pretrained(released["repo_id"])
    assert len(conversions) == 1
    assert all(torch.equal(value, second.state_dict()[key]) for key, value in first.state_dict().items())
    commit = hub.repos[released["repo_id"]].branches["main"]
    folder = released_loading.converted_cache_folder(released["repo_id"], commit)
    assert folder.is_relative_to(Path(constants.HF_HUB_CACHE))
    assert {"config.json", "fourm_hf_source.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == [commit], "a temporary folder was left beside the cache entry"
    FourMModel.from_pretrained(released["repo_id"], revision=commit)  # the commit itself: the same cache entry
    assert len(conversions) == 1


# ---- the processor and the pipeline by name -----------------------------------------------------------------
def test_one_call_gives_the_pipeline_and_fetches_only_the_tokenizers_a_call_needs(released, hub):
    import fourm_hf
    from fourm_hf.modalities import get_modality
    from fourm_hf.pipelines.any_to_any import FourMAnyToAnyPipeline

    start = len(hub.requests)
    pipe = fourm_hf.any_to_any_pipeline(released["repo_id"], num_diffusion_steps=1)
    assert isinstance(pipe, FourMAnyToAnyPipeline)
    tokenizers = released["tokenizers"]
    assert set(tokenizer_requests(hub, tokenizers, start).values()) == {0}, "a tokenizer was fetched before any call"
    image = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
    if "tok_depth" in tokenizers and "tok_rgb" in tokenizers:
        out = pipe(image, target_modalities=["depth"], seed=0, num_steps=2)
        assert out["depth"]["array"].shape == (224, 224)
        fetched = {modality for modality, count in tokenizer_requests(hub, tokenizers, start).items() if count}
        assert fetched == {"tok_rgb", "tok_depth"}
    assert not any(t.is_loaded for t in pipe.processor.sequence_tokenizers.values())
    t5 = getattr(pipe.processor, "t5_encoder", None)
    assert t5 is None or not t5.is_loaded
    targets = pipe.available_targets()
    assert {get_modality(m).public_name for m in tokenizers if get_modality(m).kind == "image_tokens"} <= set(targets)
    for target in [name for name in targets if name != "rgb"]:  # rgb: from a caption, below
        out = pipe(image, target_modalities=[target], seed=0, num_steps=2)
        assert target in out, target
    out = pipe(text="a small red cube on a table", target_modalities=["rgb"], seed=0, num_steps=2, return_tokens=True)
    assert out["rgb"]["array"].shape == (224, 224, 3) and out["rgb"]["array"].dtype == np.uint8
    if t5 is not None:  # caption -> rgb conditioned the way 4M-21 was trained: T5 embeddings, alone or with the ids
        via = {encoding: pipe(text="a small red cube on a table", target_modalities=["rgb"], seed=0, num_steps=2,
                              return_tokens=True, caption_encoding=encoding)["tokens"] for encoding in ("t5", "both")}
        assert t5.is_loaded and "caption" not in via["t5"] and "caption" in via["both"]
        assert all("t5_caption" not in tokens and tokens["tok_rgb"].shape == (196,) for tokens in via.values())
        assert not np.array_equal(via["t5"]["tok_rgb"], via["both"]["tok_rgb"]) or not np.array_equal(
            via["t5"]["tok_rgb"], out["tokens"]["tok_rgb"]), "the T5 embeddings changed nothing"
        with pytest.raises(ValueError, match=r"caption_encoding must be one of \('ids', 't5', 'both'\)"):
            pipe(text="a cube", target_modalities=["rgb"], caption_encoding="t5-xxl")
        with pytest.raises(ValueError, match="caption_encoding='t5': the call has no caption"):
            pipe(image, target_modalities=["depth"], caption_encoding="t5")


def test_transformers_pipeline_factory_cannot_read_a_released_config(released):
    """Why any_to_any_pipeline exists (docs/loading-by-name.md): the factory's AutoConfig needs model_type."""
    from transformers import pipeline

    with pytest.raises(ValueError, match="Unrecognized model"):
        pipeline("any-to-any", model=released["repo_id"])


# ---- the text tokenizer -------------------------------------------------------------------------------------
def test_the_text_tokenizer_is_named_when_missing_and_a_different_vocabulary_is_refused(released, tmp_path, monkeypatch):
    from fourm_hf import FourMProcessor
    from fourm_hf.ml4m.catalogue import ReleasedModel, register_released_model
    from fourm_hf.ml4m.released_processor import TEXT_TOKENIZER_ENV, TextTokenizerNotFoundError

    entry = released["entry"]
    register_released_model(ReleasedModel(entry.repo_id, entry.family, entry.tokenizers, text_tokenizer="missing.json",
                                          text_fingerprint=entry.text_fingerprint,
                                          semseg_classes=entry.semseg_classes), exist_ok=True)
    try:
        monkeypatch.delenv(TEXT_TOKENIZER_ENV, raising=False)
        with pytest.raises(TextTokenizerNotFoundError, match=rf"raw.githubusercontent.com/apple/ml-4m.*text_tokenizer=PATH.*{TEXT_TOKENIZER_ENV}=PATH"):
            FourMProcessor.from_pretrained(entry.repo_id)
        monkeypatch.setenv(TEXT_TOKENIZER_ENV, str(tmp_path / "nowhere.json"))
        with pytest.raises(TextTokenizerNotFoundError, match=rf"\${TEXT_TOKENIZER_ENV} .*nowhere.json: no such file"):
            FourMProcessor.from_pretrained(entry.repo_id)
        monkeypatch.setenv(TEXT_TOKENIZER_ENV, str(released["text"]))
        processor = FourMProcessor.from_pretrained(entry.repo_id)
        assert len(processor.tokenizer) == released["table"]["modalities"]["caption"]["vocab_size"]
        vocabulary = json.loads(released["text"].read_text())
        words = vocabulary["model"]["vocab"]
        last, before = sorted(words, key=words.get)[-2:]
        words[last], words[before] = words[before], words[last]  # same size, two words swapped
        (tmp_path / "other.json").write_text(json.dumps(vocabulary))
        with pytest.raises(ValueError, match="another vocabulary than the released"):
            FourMProcessor.from_pretrained(entry.repo_id, text_tokenizer=str(tmp_path / "other.json"))
        reference = ML4M / "text_tokenizer_4m_wordpiece_30k.json"
        if reference.is_file() and len(words) != 30000:
            with pytest.raises(ValueError, match="it does not belong to this model"):
                FourMProcessor.from_pretrained(entry.repo_id, text_tokenizer=str(reference))
    finally:
        register_released_model(entry, exist_ok=True)


# ---- bad input ----------------------------------------------------------------------------------------------
def test_unknown_repos_and_revisions_are_named_errors(released, hub, tmp_path):
    from fourm_hf import FourMModel

    with pytest.raises(ValueError, match=f"'{NAMESPACE}/no-such-model' is neither a local folder nor a Hub repo"):
        FourMModel.from_pretrained(f"{NAMESPACE}/no-such-model")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    other = upload(hub, tmp_path / "other", "not-a-4m-model")
    with pytest.raises(ValueError, match="is neither a fourm checkpoint .* found model_type 'bert'"):
        FourMModel.from_pretrained(other)
    with pytest.raises(ValueError, match="revision 'no-such-branch' does not exist"):
        FourMModel.from_pretrained(released["repo_id"], revision="no-such-branch")


def test_a_download_cut_midway_is_a_named_error_and_leaves_no_converted_model(released, hub, tmp_path):
    import huggingface_hub.constants as constants

    from fourm_hf import FourMModel
    from fourm_hf.ml4m.released_loading import CONVERTED_CACHE_FOLDER

    name = released["trunk"]
    repo_id = upload(hub, write_released_folder(name, tmp_path / "again"), f"{name}-cut")
    hub.cut_downloads("model.safetensors")
    try:
        with pytest.raises(ValueError, match=rf"downloading model.safetensors of '{repo_id}' failed"):
            FourMModel.from_pretrained(repo_id)
    finally:
        hub.cut_downloads(None)
    converted = Path(constants.HF_HUB_CACHE) / CONVERTED_CACHE_FOLDER / ("models--" + repo_id.replace("/", "--"))
    assert not converted.exists() or not any(converted.iterdir()), list(converted.iterdir())
    snapshots = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    assert not list(snapshots.rglob("model.safetensors")), "a partial weights file was left where a finished one goes"
    FourMModel.from_pretrained(repo_id)  # the server is back: the same call now converts
    assert any(converted.iterdir())


# ---- sequence outputs decoded: pose rotations and SAM masks -----------------------------------------------
def test_pose_ids_become_the_pose_tokenizers_rotations_and_sam_ids_masks(released, monkeypatch):
    """The fixtures' stored ids through the processor's released sequence tokenizers give the reference's
    decoded poses (23 x 3 x 3) and instance maps (thresholded, pasted into the box)."""
    from safetensors.torch import load_file

    from fourm_hf import FourMProcessor
    from fourm_hf.processing.sequence_tokens import add_sequence_decodings, decode_sam_masks
    from fourm_hf.text.text_serialization import HumanPose, SamMask, SamPoint

    fixtures = released["sequence_fixtures"]
    if not fixtures:
        pytest.skip(f"the served fixture trunk has no human_poses / sam_instance output with a tokenizer fixture")
    processor = FourMProcessor.from_pretrained(released["repo_id"])
    assert sorted(processor.sequence_tokenizers) == sorted(fixtures)
    bins = processor.tokenizer.coord_bins
    if "human_poses" in fixtures:
        io = load_file(str(next(fixtures["human_poses"].glob("*_io.safetensors"))))
        ids = io["quant.ids"].reshape(io["quant.ids"].shape[0], -1)
        humans = [HumanPose((0, 0, bins - 1, bins - 1), [0] * 9, row.tolist(), [0] * 3, [0] * 10) for row in ids]
        tokens = processor(human_poses=[humans])
        decoded = add_sequence_decodings(processor.decode(tokens), processor.sequence_tokenizers, processor.image_size, bins)
        rotations = decoded["human_poses"][0]["rotations"]
        assert rotations.shape == (len(humans), 23, 3, 3) and rotations.dtype == np.float32
        expected = io["out.decoded"].reshape(len(humans), 23, 3, 3).numpy()
        assert np.allclose(rotations, expected, atol=1e-5)
    if "sam_instance" in fixtures:
        io = load_file(str(next(fixtures["sam_instance"].glob("*_io.safetensors"))))
        ids = io["quant.ids"].reshape(io["quant.ids"].shape[0], -1)
        full = (0, 0, bins - 1, bins - 1)
        points = [SamPoint((1, 1), [SamMask(full, row.tolist()) for row in ids]), SamPoint((2, 2), [])]
        size = io["out.decoded"].shape[-1]
        masks = decode_sam_masks(points, processor.sequence_tokenizers["sam_instance"], size, bins)
        assert [len(m) for m in masks] == [len(ids), 0]
        assert all(np.array_equal(mask, (io["out.decoded"][i, 0] > 0).numpy()) for i, mask in enumerate(masks[0]))
        half = decode_sam_masks([SamPoint((1, 1), [SamMask((0, 0, (bins - 1) // 2, bins - 1), ids[0].tolist())])],
                                processor.sequence_tokenizers["sam_instance"], size, bins)[0][0]
        assert not half[:, size // 2 + 1:].any(), "a mask spills out of its box"
        tokens = processor(sam_instance=[points])
        decoded = add_sequence_decodings(processor.decode(tokens), processor.sequence_tokenizers, processor.image_size, bins)
        assert [m.shape for m in decoded["sam_instance"][0]["masks"][0]] == [(processor.image_size,) * 2] * len(ids)
        with pytest.raises(ValueError, match=r"sam_instance: token ids must lie in \[0, "):
            decode_sam_masks([SamPoint((1, 1), [SamMask(full, [10**4] * 16)])], processor.sequence_tokenizers["sam_instance"],
                             size, bins)


# ---- trust_remote_code: an assembled released folder where fourm_hf cannot be imported -----------------------
def test_a_pushed_assembled_released_folder_runs_with_trust_remote_code_without_fourm_hf(released, hub, tmp_path):
    """The by-name model and processor saved together (the lazy tokenizers download as they are saved) and pushed:
    a process where ``import fourm_hf`` fails builds the pipeline from the repo's own code, the released
    tokenizers included, and generates the same tokens as the installed package."""
    import os
    import subprocess
    import sys

    from transformers import pipeline

    from fourm_hf import FourMModel, FourMProcessor
    from fourm_hf.hub import push_checkpoint
    from fourm_hf.modalities import get_modality
    from fourm_hf.pipelines.any_to_any import FourMAnyToAnyPipeline

    folder = tmp_path / "assembled"
    FourMModel.from_pretrained(released["repo_id"]).save_pretrained(folder)
    FourMProcessor.from_pretrained(released["repo_id"], num_diffusion_steps=1).save_pretrained(folder)
    repo_id = f"{NAMESPACE}/{released['trunk']}-assembled"
    push_checkpoint(str(folder), repo_id, token=TOKEN)
    targets = [get_modality(m).public_name for m in released["tokenizers"] if m in ("tok_depth", "tok_semseg", "tok_normal")]
    options = {"target_modalities": targets, "seed": 0, "num_steps": 2, "return_tokens": True}
    image = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "rgb.npy", image)
    installed = pipeline("any-to-any", model=repo_id, pipeline_class=FourMAnyToAnyPipeline)(image, **options)["tokens"]
    assert "tok_rgb" in installed, "the released RGB tokenizer did not encode the input"
    code = (
        "import sys, json; sys.modules['fourm_hf'] = None  # make the package unimportable\n"
        "import numpy as np; from transformers import pipeline\n"
        f"pipe = pipeline('any-to-any', model={repo_id!r}, trust_remote_code=True)\n"
        "assert 'transformers_modules' in type(pipe).__module__, type(pipe)\n"
        "kinds = sorted(type(t).__name__ for t in pipe.processor.vqvaes.values())\n"
        f"out = pipe(np.load({str(tmp_path / 'rgb.npy')!r}), **{options!r})\n"
        "print(json.dumps({'kinds': kinds, 'tokens': {n: ids.tolist() for n, ids in out['tokens'].items()}}))\n"
    )
    environment = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(remote["kinds"]) == {"ReleasedModalityTokenizer"}
    assert remote["tokens"] == {name: ids.tolist() for name, ids in installed.items()}


# ---- the catalogue --------------------------------------------------------------------------------------------
def test_every_built_in_entry_names_known_modalities_and_released_tokenizer_repos():
    from fourm_hf.ml4m.assembly import modality_from_released_name
    from fourm_hf.ml4m.catalogue import released_models
    from fourm_hf.modalities import get_modality
    from fourm_hf.tokenizers.released_modalities import modality_kind

    entries = {repo_id: entry for repo_id, entry in released_models().items() if repo_id.startswith("EPFL-VILAB/")}
    families = {entry.family for entry in entries.values()}
    assert {"4M-7", "4M-7-T2I", "4M-7-SR", "4M-21"} <= families
    assert {f"EPFL-VILAB/4M-21_{size}" for size in ("B", "L", "XL")} <= set(entries)
    for repo_id, entry in entries.items():
        for modality, tokenizer in entry.tokenizers.items():
            get_modality(modality)  # a registered modality
            assert modality_kind(modality) is not None, (repo_id, modality)
            assert tokenizer.startswith("EPFL-VILAB/4M_tokenizers_"), tokenizer
            if "edge" not in tokenizer:  # the one edge tokenizer serves two modalities, so it names none
                assert modality_from_released_name(tokenizer.split("/")[1]) == modality, tokenizer
        assert set(entry.feature_models) <= set(entry.tokenizers)
        assert (entry.t5_encoder is not None) == (entry.family == "4M-21")


def test_registering_is_checked():
    from fourm_hf.ml4m.catalogue import ReleasedModel, register_released_model, released_model, unregister_released_model

    with pytest.raises(ValueError, match="repo_id must be 'namespace/name'"):
        ReleasedModel("no-namespace", "4M-7")
    with pytest.raises(ValueError, match=r"feature models for \['tok_clip'\], which have no tokenizer"):
        ReleasedModel("me/x", "4M-7", {}, {"tok_clip": "openai/clip-vit-base-patch16"})
    with pytest.raises(TypeError, match="expected a ReleasedModel"):
        register_released_model({"repo_id": "me/x"})
    entry = register_released_model(ReleasedModel("me/x", "4M-7"))
    try:
        assert released_model("me/x") is entry
        with pytest.raises(ValueError, match="already in the catalogue; pass exist_ok=True"):
            register_released_model(ReleasedModel("me/x", "4M-7"))
    finally:
        unregister_released_model("me/x")
    assert released_model("me/x") is None
    with pytest.raises(ValueError, match="'me/x' is not in the catalogue"):
        unregister_released_model("me/x")
