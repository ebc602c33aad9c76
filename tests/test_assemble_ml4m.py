"""``fourm-hf assemble-ml4m`` on the reference fixtures: every trunk with every released tokenizer
fixture (paired where the fixture data says they fit, refused with a clear error where not), the
assembled folder through ``pipeline("any-to-any")`` in a fresh process for every target it can
decode, the same after a push to and a pull from the loopback Hub, and the bad inputs.

Everything is discovered under ``../shared/fixtures/ml4m``: trunks are the released-layout folders
(``config.json`` with ``domains_in`` + ``model.safetensors``) and the ``X.safetensors`` files with an
``X.json`` holding ``fm_config``; tokenizers are the folders under ``tokenizers/``, copied to a folder
named like their released repo (``<name>.json`` -> ``released_counterpart``), as ``huggingface-cli
download ... --local-dir`` would name them; text tokenizers are the ``text_tokenizer*.json`` files.
Whether a tokenizer fits a trunk is read from the fixtures' own JSON tables (vocabulary sizes, grids,
types), not from the code under test. The fixture tokenizers are shrunk independently of the trunks,
so only some pairs fit (4M-21: RGB and semseg; the 4M-7 trunk: semseg; SR: none, its outputs are at
448 px): the others are the refusals.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import SHARED_DIR, shared_path, subprocess_env
from fourm_hf import cli
from fourm_hf.ml4m.assembly import assemble_ml4m, modality_from_released_name
from fourm_hf.ml4m.conversion import convert_ml4m_checkpoint, resolve_reference_files
from fourm_hf.modalities import get_modality
from fourm_hf.text.sequence_modalities import SEQUENCE_MODALITIES
from fourm_hf.text.tokenization_fourm import FourMTextTokenizer
from hub_server import HubServer, huggingface_hub_pointed_at

ML4M = SHARED_DIR / "fixtures" / "ml4m"
TOKEN = "hf_assemble_test_token"
DIFFUSION_STEPS = "2"  # keeps the DiVAE decoding of the tests short (the command's default is 25)


# ---- discovery -------------------------------------------------------------------------------------------
@dataclass
class Trunk:
    name: str
    model: Path  # a released folder or a weights file
    config: Path | None  # the reference config when it is not beside the weights
    table: dict  # the fixture JSON (modalities table, fm_config)

    @property
    def image_size(self) -> int:
        fm_config = self.table["fm_config"]
        return int(fm_config.get("image_size", 224))

    @property
    def modalities(self) -> dict:
        return self.table["modalities"]


def discover_trunks() -> dict[str, Trunk]:
    trunks = {}
    if not ML4M.is_dir():
        return trunks
    for folder in sorted(p for p in ML4M.iterdir() if p.is_dir()):
        config, table = folder / "config.json", folder / f"{folder.name}.json"
        if config.is_file() and (folder / "model.safetensors").is_file() and table.is_file():
            if "domains_in" in json.loads(config.read_text()):
                trunks[folder.name] = Trunk(folder.name, folder, None, json.loads(table.read_text()))
    for weights in sorted(ML4M.glob("*.safetensors")):
        table = weights.with_suffix(".json")
        if table.is_file() and "fm_config" in json.loads(table.read_text()):
            trunks[weights.stem] = Trunk(weights.stem, weights, table, json.loads(table.read_text()))
    return trunks


TRUNKS = discover_trunks()


@dataclass
class ReleasedTokenizer:
    folder: Path  # named like the released repo
    modality: str
    config: dict  # the released config.json

    @property
    def is_feature_map(self) -> bool:  # a ViT VQ-VAE on a vision model's feature grid (CLIP, DINOv2, ImageBind)
        return not self.config["patch_proj"] and self.config["dec_type"].startswith("vit")

    @property
    def is_mlp(self) -> bool:  # a bottleneck-MLP tokenizer (one vector per sample: global embeddings, poses)
        return self.config["enc_type"].startswith("BottleneckMLP")


@pytest.fixture(scope="module")
def released_tokenizers(tmp_path_factory) -> list[ReleasedTokenizer]:
    """Every tokenizer fixture as a folder named like its released repo (config.json + model.safetensors)."""
    root = shared_path("fixtures", "ml4m", "tokenizers")
    downloads = tmp_path_factory.mktemp("downloads")
    found = []
    for fixture in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        repo = json.loads((fixture / f"{fixture.name}.json").read_text())["released_counterpart"]
        folder = downloads / repo.split("/")[1]
        folder.mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy(fixture / name, folder / name)
        found.append(ReleasedTokenizer(folder, modality_from_released_name(folder), json.loads((fixture / "config.json").read_text())))
    assert found, f"no tokenizer fixtures under {root}"
    return found


def text_tokenizer_for(trunk: Trunk) -> Path:
    """The fixture text tokenizer whose size is the trunk's caption vocabulary."""
    sizes = {path: len(FourMTextTokenizer(tokenizer_file=str(path))) for path in sorted(ML4M.rglob("text_tokenizer*.json"))}
    matching = [path for path, size in sizes.items() if size == trunk.modalities["caption"]["vocab_size"]]
    assert matching, f"{trunk.name}: no text tokenizer fixture of {trunk.modalities['caption']['vocab_size']} ids in {sizes}"
    return matching[0]


def expected_refusal(trunk: Trunk, tokenizer: ReleasedTokenizer) -> str | None:
    """What assembling ``trunk`` with ``tokenizer`` alone must fail with (a regex), from the fixture tables;
    None when it must succeed."""
    table = trunk.modalities
    domain = next((d for d in (f"{tokenizer.modality}@{trunk.image_size}", tokenizer.modality) if d in table), None)
    if domain is None:
        return "the model has no modality"
    entry = table[domain]
    if entry["type"] != "img":
        return "is a sequence modality in this model"
    learned = entry.get("pos_emb") == "learned parameter"  # the global embeddings: tokens, not a grid
    if learned and not tokenizer.is_mlp:
        return "needs a bottleneck-MLP tokenizer"
    if tokenizer.is_mlp and not learned:
        return "a bottleneck-MLP tokenizer gives one vector per sample"
    if entry["vocab_size"] != tokenizer.config["codebook_size"]:
        return f"has {tokenizer.config['codebook_size']} codes but the model's .* vocabulary is {entry['vocab_size']}"
    # ids per sample, per modality (its own grid): the tokenizer's at the trunk's resolution vs the model's
    tokens = tokenizer.config["num_codebooks"] if tokenizer.is_mlp else (trunk.image_size // tokenizer.config["patch_size"]) ** 2
    if tokens != entry["max_tokens"]:
        return "the tokenizer gives"
    text_outputs = [name for name in ("caption", "det") if name in table and table[name]["decoder"]]
    if not entry["decoder"] and not text_outputs:
        return "no output of the model could be decoded"
    return None


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Each trunk converted once with convert-ml4m (the 'converted folder' form of --model)."""
    shared_path("fixtures", "ml4m")
    root = tmp_path_factory.mktemp("converted")
    folders = {}
    for name, trunk in TRUNKS.items():
        weights, config = resolve_reference_files(str(trunk.model), None if trunk.config is None else str(trunk.config))
        convert_ml4m_checkpoint(weights, config, root / name)
        folders[name] = root / name
    return folders


# ---- pairing every trunk with every tokenizer ----------------------------------------------------------
@pytest.mark.parametrize("trunk_name", sorted(TRUNKS) or [pytest.param("none", marks=pytest.mark.skip(
    reason=f"no reference fixtures under {ML4M}"))])
def test_every_tokenizer_fixture_pairs_with_a_trunk_or_is_refused_clearly(trunk_name, released_tokenizers, converted,
                                                                         tmp_path):
    trunk = TRUNKS[trunk_name]
    text = text_tokenizer_for(trunk)
    for tokenizer in released_tokenizers:
        out = tmp_path / tokenizer.folder.name
        refusal = expected_refusal(trunk, tokenizer)
        if refusal is None:
            summary = assemble_ml4m(converted[trunk_name], [str(tokenizer.folder)], text, out,
                                    allow_missing_tokenizers=True)
            assert summary["tokenizers"] == {tokenizer.modality: str(tokenizer.folder)}
            assert json.loads((out / "processor_config.json").read_text())["vqvae_modalities"] == [tokenizer.modality]
            assert tokenizer.modality not in summary["undecodable"]
        else:
            with pytest.raises(ValueError, match=refusal) as error:
                assemble_ml4m(converted[trunk_name], [str(tokenizer.folder)], text, out, allow_missing_tokenizers=True)
            assert repr(tokenizer.modality) in str(error.value) or "no output" in str(error.value), str(error.value)
            assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"


# ---- the assembled folder runs, locally and from the Hub ----------------------------------------------
RUN_PIPELINE = """
import json, sys
import numpy as np
import fourm_hf
from transformers import pipeline
from fourm_hf.pipelines.any_to_any import FourMAnyToAnyPipeline

source, from_hub = sys.argv[1], sys.argv[2] == "hub"
# a Hub repo declares its pipeline class (custom_pipelines); with fourm_hf installed, name it
pipe = pipeline("any-to-any", model=source, **({"pipeline_class": FourMAnyToAnyPipeline} if from_hub else {}))
assert type(pipe) is FourMAnyToAnyPipeline, type(pipe)
image = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
report = {}
for target in pipe.available_targets():
    inputs = {"text": "a small red cube on a table"} if target == "rgb" else {"inputs": image}
    out = pipe(**inputs, target_modalities=[target], seed=0, return_tokens=True)
    value = out[target]
    if target == "caption":
        summary = {"kind": type(value).__name__}
    elif target == "det":
        summary = {"kind": "boxes", "boxes": type(value["boxes"]).__name__, "image": list(value["image"].size)}
    elif "text" in value:  # 4M-21's text-serialised outputs: text, parsed data or a parse error
        summary = {"kind": "sequence", "fields": sorted(value), "text": value["text"], "parsed": value["error"] is None}
    elif value["image"] is None:  # feature maps and global embeddings: an array only
        summary = {"kind": "array", "array": list(value["array"].shape), "dtype": str(value["array"].dtype)}
    else:
        summary = {"kind": "image", "image": list(value["image"].size), "array": list(value["array"].shape)}
    summary["tokens"] = {name: ids.tolist() for name, ids in out["tokens"].items()}
    report[target] = summary
print(json.dumps(report))
"""

FRIENDLY = {"tok_rgb": "rgb", "tok_depth": "depth", "tok_normal": "normal", "tok_semseg": "semseg", "tok_clip": "clip",
            "tok_dinov2_global": "dinov2_global", "tok_imagebind_global": "imagebind_global"}


def run_pipeline(source: str, where: str, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN_PIPELINE, source, where], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The loopback Hub, with huggingface_hub pointed at it here and in child processes."""
    with HubServer(token=TOKEN) as server, huggingface_hub_pointed_at(server, tmp_path_factory.mktemp("hf_home")):
        yield server


@pytest.mark.parametrize("trunk_name", sorted(TRUNKS) or [pytest.param("none", marks=pytest.mark.skip(
    reason=f"no reference fixtures under {ML4M}"))])
def test_assembled_folder_runs_every_target_in_a_fresh_process_and_from_the_hub(trunk_name, released_tokenizers, hub,
                                                                               tmp_path, capsys):
    """Assembled from the reference checkpoint itself (converted on the fly) with every tokenizer that fits."""
    trunk = TRUNKS[trunk_name]
    fitting = [t for t in released_tokenizers if expected_refusal(trunk, t) is None]
    # without a fitting tokenizer (the SR trunk), every tokenizer for one of its modalities: a clear refusal
    given = fitting or [t for t in released_tokenizers if t.modality in trunk_domains(trunk)]
    arguments = ["assemble-ml4m", "--model", str(trunk.model), "--text-tokenizer", str(text_tokenizer_for(trunk)),
                 "--out", str(tmp_path / "out"), "--allow-missing-tokenizers", "--num-diffusion-steps", DIFFUSION_STEPS,
                 "--tokenizers", *[str(t.folder) for t in given]]
    arguments += ["--config", str(trunk.config)] if trunk.config else []
    if not fitting:
        assert cli.main(arguments) == 2
        assert "fourm-hf assemble-ml4m:" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
        return
    assert cli.main(arguments) == 0, capsys.readouterr().err
    assert "pipeline targets" in capsys.readouterr().out
    expected = [FRIENDLY[t.modality] for t in fitting if FRIENDLY.get(t.modality) and trunk_has_output(trunk, t.modality)]
    expected += [name for name in ("caption", "det", *SEQUENCE_MODALITIES) if trunk.modalities.get(name, {}).get("decoder")]

    local = run_pipeline(str(tmp_path / "out"), "local", subprocess_env())
    assert sorted(local) == sorted(expected)
    for name, summary in local.items():
        if name == "caption":
            assert summary["kind"] == "str"
        elif name == "det":
            assert summary["kind"] == "boxes" and summary["boxes"] == "list" and summary["image"] == [224, 224]
        elif name in SEQUENCE_MODALITIES:
            assert summary["kind"] == "sequence" and summary["fields"] == ["data", "error", "text"], name
        elif summary["kind"] == "array":  # a global embedding (one vector) or a feature map, of the tokenizer's width
            tokenizer = next(t for t in fitting if FRIENDLY.get(t.modality) == name)
            count = len(summary["tokens"][f"tok_{name}"])
            assert count == trunk.modalities.get(f"tok_{name}@{trunk.image_size}", trunk.modalities.get(f"tok_{name}"))["max_tokens"]
            side = [] if tokenizer.is_mlp else [int(count**0.5)] * 2
            assert summary["array"] == [*side, tokenizer.config["n_channels"]] and summary["dtype"] == "float32", name
        else:
            assert summary["image"] == [224, 224] and summary["array"][:2] == [224, 224], name
            assert len(summary["tokens"][f"tok_{name}"]) == 196, name

    repo_id = f"fourm-tester/{trunk_name}-assembled"
    assert cli.main(["push-to-hub", "--checkpoint", str(tmp_path / "out"), "--repo-id", repo_id]) == 0
    files = hub.files(repo_id)
    assert all(f"vqvae/{t.modality}/modality_tokenizer.json" in files for t in fitting), sorted(files)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")  # the Hub settings of the fixture
    assert run_pipeline(repo_id, "hub", env) == local  # same tokens, seed for seed


def trunk_domains(trunk: Trunk) -> set[str]:
    """The trunk's modalities under their model names (tok_rgb@224 -> tok_rgb at a 224 px trunk)."""
    suffix = f"@{trunk.image_size}"
    return {name[: -len(suffix)] if name.endswith(suffix) else name for name in trunk.modalities}


def trunk_has_output(trunk: Trunk, modality: str) -> bool:
    entry = trunk.modalities.get(f"{modality}@{trunk.image_size}") or trunk.modalities.get(modality) or {}
    return bool(entry.get("decoder"))


# ---- bad inputs --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paired(released_tokenizers, converted):
    """The trunk with the most fitting tokenizer fixtures, its converted folder, text tokenizer and tokenizers."""
    def fits(name):
        return [t for t in released_tokenizers if expected_refusal(TRUNKS[name], t) is None]

    name = max(sorted(TRUNKS), key=lambda n: len(fits(n)))
    assert fits(name), "no tokenizer fixture fits any trunk"
    # tokenizers that read the image or a map first (a feature tokenizer alone would be output-only)
    return TRUNKS[name], converted[name], text_tokenizer_for(TRUNKS[name]), sorted(fits(name), key=lambda t: t.is_feature_map)


def test_an_image_output_without_tokenizer_is_an_error_unless_allowed(paired, tmp_path):
    trunk, model, text, tokenizers = paired
    folders = [str(t.folder) for t in tokenizers]
    with pytest.raises(ValueError, match=r"the model outputs \[.*\] have no tokenizer to decode them \(given: ") as error:
        assemble_ml4m(model, folders, text, tmp_path / "out")
    message = str(error.value)
    assert all(repr(t.modality) in message for t in tokenizers) and "--allow-missing-tokenizers" in message
    assert not (tmp_path / "out").exists()
    summary = assemble_ml4m(model, folders, text, tmp_path / "out", allow_missing_tokenizers=True)
    assert summary["undecodable"] and all(t.modality not in summary["undecodable"] for t in tokenizers)


def test_the_reference_wordpiece_tokenizer_is_refused_by_a_tiny_trunk(paired, tmp_path):
    trunk, model, _, tokenizers = paired
    wordpiece = shared_path("fixtures", "ml4m", "text_tokenizer_4m_wordpiece_30k.json")
    size = trunk.modalities["caption"]["vocab_size"]
    with pytest.raises(ValueError, match=rf"--text-tokenizer: it has 30000 ids but .*'caption': {size}"):
        assemble_ml4m(model, [str(tokenizers[0].folder)], wordpiece, tmp_path / "out", allow_missing_tokenizers=True)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no such file or folder"):
        assemble_ml4m(model, [str(tokenizers[0].folder)], tmp_path / "missing.json", tmp_path / "out")


def test_a_folder_not_named_like_a_release_needs_modality_equals_dir(paired, tmp_path):
    trunk, model, text, tokenizers = paired
    plain = tmp_path / "my-tokenizer"
    shutil.copytree(tokenizers[0].folder, plain)
    with pytest.raises(ValueError, match="cannot tell which modality 'my-tokenizer' tokenizes") as error:
        assemble_ml4m(model, [str(plain)], text, tmp_path / "out", allow_missing_tokenizers=True)
    assert "pass it as MODALITY=DIR" in str(error.value) and "4M_tokenizers_<modality>_<size>_<res>" in str(error.value)
    summary = assemble_ml4m(model, [f"{tokenizers[0].modality}={plain}"], text, tmp_path / "out",
                            allow_missing_tokenizers=True)
    assert summary["tokenizers"] == {tokenizers[0].modality: str(plain)}


def test_the_hub_cache_layout_names_the_modality(tmp_path):
    snapshot = tmp_path / "models--EPFL-VILAB--4M_tokenizers_semseg_4k_224-448" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert modality_from_released_name(snapshot) == "tok_semseg"
    assert modality_from_released_name(tmp_path / "4M_tokenizers_DINOv2-B14-global_8k_16_224") == "tok_dinov2_global"
    assert modality_from_released_name(tmp_path / "anything") is None
    with pytest.raises(ValueError, match="serves several modalities; name one: tok_sam_edge=.* or tok_canny_edge="):
        modality_from_released_name(tmp_path / "4M_tokenizers_edge_8k_224-512")


def test_wrong_modality_pairings_are_refused(paired, tmp_path):
    trunk, model, text, tokenizers = paired
    folder = str(tokenizers[0].folder)
    with pytest.raises(ValueError, match=r"the model has no modality 'tok_mystery'; its image-token modalities are \["):
        assemble_ml4m(model, [f"tok_mystery={folder}"], text, tmp_path / "out", allow_missing_tokenizers=True)
    with pytest.raises(ValueError, match="two tokenizers for"):
        assemble_ml4m(model, [folder, f"{tokenizers[0].modality}={folder}"], text, tmp_path / "out")
    with pytest.raises(ValueError, match="is not a folder"):
        assemble_ml4m(model, [str(tmp_path / "4M_tokenizers_rgb_16k_224-448")], text, tmp_path / "out")
    other = [n for n in trunk_domains(trunk) if n.startswith("tok_") and n != tokenizers[0].modality
             and trunk_has_output(trunk, n) and expected_refusal(trunk, ReleasedTokenizer(tokenizers[0].folder, n, tokenizers[0].config))]
    assert other, f"{trunk.name}: no other image output to mis-pair {tokenizers[0].modality}'s tokenizer with"
    for name in other:  # the tokenizer under another of the model's names: its vocabulary or its kind disagrees
        with pytest.raises(ValueError, match=f"tokenizer for '{name}'"):
            assemble_ml4m(model, [f"{name}={folder}"], text, tmp_path / "out", allow_missing_tokenizers=True)
    assert not (tmp_path / "out").exists()


def test_a_super_resolution_output_is_refused(released_tokenizers, converted, tmp_path):
    """A modality at another resolution than the trunk's (the SR trunk's @448 outputs)."""
    shared_path("fixtures", "ml4m")
    for name, trunk in TRUNKS.items():
        other = [d for d, e in trunk.modalities.items() if e["type"] == "img" and e.get("vocab_size") and
                 e.get("input_size", trunk.image_size) != trunk.image_size]
        for domain in other:
            tokenizer = next((t for t in released_tokenizers if domain.split("@")[0] == t.modality), None)
            if tokenizer is None:
                continue
            with pytest.raises(ValueError, match=rf"{domain} is at {domain.split('@')[1]} px, but the processor and the "
                                                 rf"any-to-any pipeline serve one resolution, the model's {trunk.image_size} px"):
                assemble_ml4m(converted[name], [f"{domain}={tokenizer.folder}"], text_tokenizer_for(trunk),
                              tmp_path / "out", allow_missing_tokenizers=True)
            return
    pytest.fail("no fixture trunk has a modality at another resolution (expected the SR layout)")


def test_the_output_folder_is_written_atomically(paired, tmp_path, monkeypatch):
    trunk, model, text, tokenizers = paired
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        assemble_ml4m(model, [str(tokenizers[0].folder)], text, tmp_path / "taken", allow_missing_tokenizers=True)

    from fourm_hf.processing.processing_fourm import FourMProcessor

    def fail(self, folder, **kwargs):  # the model is already written when the processor fails
        raise OSError("disk full")

    monkeypatch.setattr(FourMProcessor, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        assemble_ml4m(model, [str(tokenizers[0].folder)], text, tmp_path / "out", allow_missing_tokenizers=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no output, no temporary folder


def test_the_command_reports_errors_without_a_traceback(paired, tmp_path, capsys):
    trunk, model, text, tokenizers = paired
    code = cli.main(["assemble-ml4m", "--model", str(model), "--tokenizers", f"tok_mystery={tokenizers[0].folder}",
                     "--text-tokenizer", str(text), "--out", str(tmp_path / "out")])
    assert code == 2 and "fourm-hf assemble-ml4m: tokenizer for 'tok_mystery'" in capsys.readouterr().err
    code = cli.main(["assemble-ml4m", "--model", str(model), "--config", str(tmp_path / "x.json"), "--tokenizers",
                     str(tokenizers[0].folder), "--text-tokenizer", str(text), "--out", str(tmp_path / "out")])
    assert code == 2 and "is a converted folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_feature_tokenizer_joins_with_its_vision_model(paired, released_tokenizers, tmp_path):
    """A CLIP-style feature tokenizer needs --feature-model; with a (tiny, random) CLIP vision model whose
    features have the tokenizer's width, the folder holds it and the pipeline conditions on its tokens."""
    import numpy as np
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, pipeline

    trunk, model, text, tokenizers = paired
    features = [t for t in released_tokenizers if t.is_feature_map and expected_refusal(trunk, t) is None]
    if not features:
        pytest.fail(f"{trunk.name}: no feature-map tokenizer fixture with its vocabulary (expected the CLIP one)")
    feature = features[0]
    tokenizers = [t for t in tokenizers if t.modality != feature.modality]
    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=trunk.image_size,
        patch_size=16, projection_dim=feature.config["n_channels"]))
    clip.save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="--feature-model for \\['tok_other'\\], which get no tokenizer"):
        assemble_ml4m(model, [str(t.folder) for t in tokenizers], text, tmp_path / "out", allow_missing_tokenizers=True,
                      feature_models=[f"tok_other={tmp_path / 'clip'}"])
    with pytest.raises(ValueError, match="expected MODALITY=DIR"):
        assemble_ml4m(model, [str(feature.folder)], text, tmp_path / "out", feature_models=[str(tmp_path / "clip")])
    # without its vision model: output-only (decoded, never computed from the image)
    summary = assemble_ml4m(model, [str(feature.folder), *[str(t.folder) for t in tokenizers]], text,
                            tmp_path / "output-only", allow_missing_tokenizers=True)
    assert summary["output_only"] == [feature.modality] and feature.modality not in summary["undecodable"]
    pipe = pipeline("any-to-any", model=str(tmp_path / "output-only"))
    image = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    out = pipe(image, target_modalities=["caption"], seed=0, return_tokens=True)
    assert feature.modality not in out["tokens"] and isinstance(out["caption"], str)
    friendly = feature.modality.removeprefix("tok_")
    out = pipe(image, target_modalities=[friendly], seed=0, num_steps=2)
    grid = trunk.image_size // 16
    assert out[friendly]["image"] is None and out[friendly]["array"].shape == (grid, grid, feature.config["n_channels"])
    summary = assemble_ml4m(model, [str(feature.folder), *[str(t.folder) for t in tokenizers]], text, tmp_path / "out",
                            allow_missing_tokenizers=True, feature_models=[f"{feature.modality}={tmp_path / 'clip'}"])
    assert feature.modality in summary["tokenizers"] and feature.modality not in summary["undecodable"]
    assert (tmp_path / "out" / "vqvae" / feature.modality / "feature_model" / "config.json").is_file()
    pipe = pipeline("any-to-any", model=str(tmp_path / "out"))
    image = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    out = pipe(image, target_modalities=["caption"], seed=0, return_tokens=True)
    assert len(out["tokens"][feature.modality]) == (trunk.image_size // 16) ** 2 and isinstance(out["caption"], str)


# ---- feature maps on their own grid and global embeddings ----------------------------------------------
def own_grid_outputs(trunk: Trunk) -> dict[str, dict]:
    """The trunk's image-token outputs at its resolution that are feature maps on a grid other than the main
    one (4M-21's 16x16 tok_dinov2 / tok_imagebind) or global embeddings (learned positions), from the table."""
    main = trunk.image_size // 16
    found = {}
    for domain, entry in trunk.modalities.items():
        name = domain.removesuffix(f"@{trunk.image_size}")
        if entry["type"] != "img" or not entry["decoder"] or entry.get("input_size", trunk.image_size) != trunk.image_size:
            continue
        grid = entry.get("grid") or [entry["input_size"] // entry["patch_size"]] * 2
        if entry.get("pos_emb") == "learned parameter" or (name.startswith("tok_") and grid != [main, main]
                                                             and "edge" not in name):
            found[name] = entry
    return found


def build_own_grid_tokenizers(trunk: Trunk, root: Path) -> tuple[list[str], list[str], dict[str, dict]]:
    """Tiny random released-layout tokenizers for ``own_grid_outputs``: a bottleneck-MLP VQ-VAE per global
    embedding (the trunk's vocabulary and token count), a ViT VQ-VAE on a tiny random DINOv2's feature grid
    per feature map (patch 224 / grid, so the grid is the trunk's). Returns ``--tokenizers``,
    ``--feature-model`` arguments and ``{modality: what the pipeline must give}``."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from fourm_hf.tokenizers.mlp_vqvae import FourMMLPVQVAE, FourMMLPVQVAEConfig
    from fourm_hf.tokenizers.released_layout import save_in_released_layout
    from fourm_hf.tokenizers.vit_vqvae import FourMViTVQVAE, FourMViTVQVAEConfig

    tokenizers, features, expected = [], [], {}
    for seed, (name, entry) in enumerate(sorted(own_grid_outputs(trunk).items())):
        # the first feature map gets a vision model (its tokens come from the image), the others are output-only
        torch.manual_seed(seed)
        if entry.get("pos_emb") == "learned parameter":
            channels = 24
            model = FourMMLPVQVAE(FourMMLPVQVAEConfig(
                enc_type="BottleneckMLP/B_1-Wi_16", dec_type="BottleneckMLP/B_1-Wi_16", n_channels=channels,
                latent_dim=8 * entry["max_tokens"], num_codebooks=entry["max_tokens"], codebook_size=entry["vocab_size"]))
            expected[name] = {"array": [channels], "tokens": entry["max_tokens"]}
        else:
            grid, channels = entry["grid"][0], 32
            model = FourMViTVQVAE(FourMViTVQVAEConfig(
                enc_type="vit_tiny_d32_l1_h2_enc", dec_type="vit_tiny_d32_l1_h2_dec", image_size=grid * 16,
                codebook_size=entry["vocab_size"], latent_dim=8, patch_proj=False, n_channels=channels))
            encodes = not features
            if encodes:
                vision = Dinov2Model(Dinov2Config(hidden_size=channels, num_hidden_layers=1, num_attention_heads=2,
                                                  mlp_ratio=2, image_size=trunk.image_size,
                                                  patch_size=trunk.image_size // grid))
                vision.save_pretrained(root / f"{name}_vision")
                features.append(f"{name}={root / f'{name}_vision'}")
            expected[name] = {"array": [grid, grid, channels], "tokens": grid * grid, "encodes": encodes}
        save_in_released_layout(model.eval(), root / name)
        tokenizers.append(f"{name}={root / name}")
    return tokenizers, features, expected


OWN_GRID_TRUNKS = sorted(name for name, trunk in TRUNKS.items() if own_grid_outputs(trunk))


@pytest.mark.parametrize("trunk_name", OWN_GRID_TRUNKS or [pytest.param("none", marks=pytest.mark.skip(
    reason=f"no fixture trunk under {ML4M} has feature maps on their own grid or global embeddings"))])
def test_own_grid_feature_maps_and_global_embeddings_are_served(trunk_name, converted, tmp_path):
    """RGB -> each feature map on its own grid (an array (g, g, C), no image) and each global embedding (a vector
    (C,)); as inputs, the image gives the feature-map tokens and ``vectors`` the global ones."""
    import numpy as np
    from transformers import pipeline

    from fourm_hf.pipelines.grid import grid_size, make_grid

    trunk = TRUNKS[trunk_name]
    tokenizers, features, expected = build_own_grid_tokenizers(trunk, tmp_path)
    summary = assemble_ml4m(converted[trunk_name], tokenizers, text_tokenizer_for(trunk), tmp_path / "out",
                            allow_missing_tokenizers=True, feature_models=features)
    assert all(name not in summary["undecodable"] for name in expected), summary["undecodable"]
    assert all(get_modality(name).public_name in summary["targets"] for name in expected), summary["targets"]
    assert summary["output_only"] == sorted(n for n, w in expected.items() if w.get("encodes") is False)
    assert summary["output_only"] and len(summary["output_only"]) < len([w for w in expected.values() if "encodes" in w])
    pipe = pipeline("any-to-any", model=str(tmp_path / "out"))
    image = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
    for name, wanted in expected.items():
        friendly = get_modality(name).public_name
        out = pipe(image, target_modalities=[friendly], seed=0, return_tokens=True, num_steps=2)
        value = out[friendly]
        assert value["image"] is None and isinstance(value["array"], np.ndarray), name
        assert list(value["array"].shape) == wanted["array"] and value["array"].dtype == np.float32, name
        assert np.isfinite(value["array"]).all(), name
        assert len(out["tokens"][name]) == wanted["tokens"], name
        shown = make_grid({"rgb": image}, {friendly: value}, tile_size=64)  # the input tile + a line of text
        assert shown.size[0] == grid_size(1, 64)[0] and shown.size[1] > grid_size(1, 64)[1], name
        # the image's feature tokens are conditions (output-only ones are not computed), except for the target itself
        conditions = {other for other, w in expected.items() if w.get("encodes") and other != name}
        assert {n for n in out["tokens"] if n in expected and n != name} == conditions, name
        assert all(len(out["tokens"][other]) == expected[other]["tokens"] for other in conditions)
    vectors = {get_modality(n).public_name: np.random.default_rng(1).normal(size=w["array"]).astype(np.float32)
               for n, w in expected.items() if len(w["array"]) == 1}
    for friendly, vector in vectors.items():  # a global embedding as input: caption from it
        out = pipe({friendly: vector}, target_modalities=["caption"], seed=0, return_tokens=True)
        assert isinstance(out["caption"], str) and len(out["tokens"][f"tok_{friendly}"]) == 16
        with pytest.raises(ValueError, match=rf"vectors\['tok_{friendly}'\]: expected shape \({vector.shape[0]},\)"):
            pipe({friendly: vector[:-1]}, target_modalities=["caption"])
    with pytest.raises(ValueError, match="is not an input of its own; the processor computes"):
        pipe({"rgb": image, get_modality(next(n for n, w in expected.items() if "encodes" in w)).public_name: image})


def test_a_tokenizer_with_other_ids_per_sample_is_refused(converted, tmp_path):
    """A global-embedding tokenizer with the wrong number of heads, and one for a grid modality: named errors."""
    import torch

    from fourm_hf.tokenizers.mlp_vqvae import FourMMLPVQVAE, FourMMLPVQVAEConfig
    from fourm_hf.tokenizers.released_layout import save_in_released_layout

    name = next((n for n in OWN_GRID_TRUNKS if any(e.get("pos_emb") == "learned parameter"
                                                  for e in own_grid_outputs(TRUNKS[n]).values())), None)
    if name is None:
        pytest.skip(f"no fixture trunk under {ML4M} has a global embedding")
    trunk = TRUNKS[name]
    modality, entry = next((m, e) for m, e in sorted(own_grid_outputs(trunk).items()) if e.get("pos_emb") == "learned parameter")
    torch.manual_seed(0)
    heads = entry["max_tokens"] // 2
    model = FourMMLPVQVAE(FourMMLPVQVAEConfig(enc_type="BottleneckMLP/B_1-Wi_16", dec_type="BottleneckMLP/B_1-Wi_16",
                                              n_channels=12, latent_dim=8 * heads, num_codebooks=heads,
                                              codebook_size=entry["vocab_size"]))
    save_in_released_layout(model.eval(), tmp_path / "mlp")
    with pytest.raises(ValueError, match=rf"tokenizer for '{modality}': the tokenizer gives {heads} ids per sample at "
                                         rf"{trunk.image_size} px, the model's {modality} has {entry['max_tokens']} tokens"):
        assemble_ml4m(converted[name], [f"{modality}={tmp_path / 'mlp'}"], text_tokenizer_for(trunk), tmp_path / "out",
                      allow_missing_tokenizers=True)
    grids = [m for m, e in sorted(own_grid_outputs(trunk).items()) if e.get("pos_emb") != "learned parameter"]
    for grid_modality in grids[:1]:  # the MLP tokenizer under a grid modality's name
        with pytest.raises(ValueError, match=rf"tokenizer for '{grid_modality}': a bottleneck-MLP tokenizer gives one "
                                             rf"vector per sample, but the model's {grid_modality} is a \d+x\d+ grid"):
            assemble_ml4m(converted[name], [f"{grid_modality}={tmp_path / 'mlp'}"], text_tokenizer_for(trunk),
                          tmp_path / "out", allow_missing_tokenizers=True)
    assert not (tmp_path / "out").exists()


# ---- super-resolution after a base model ---------------------------------------------------------------
def high_resolution_outputs(trunk: Trunk) -> dict[str, dict]:
    """The trunk's image-token outputs at another resolution than its own (the SR layout's @448)."""
    return {d: e for d, e in trunk.modalities.items() if e["type"] == "img" and e["decoder"] and e.get("vocab_size")
            and e.get("input_size", trunk.image_size) != trunk.image_size}


def test_super_resolution_runs_after_a_base_pipeline(released_tokenizers, converted, tmp_path):
    """A base trunk's pipeline generates 224 px tokens; the SR trunk turns them into its @448 tokens, decoded by
    the same (fixture) tokenizers wrapped at 448 px."""
    import numpy as np
    from transformers import pipeline

    from fourm_hf.modeling.modeling_fourm import FourMModel
    from fourm_hf.pipelines.super_resolution import super_resolve
    from fourm_hf.tokenizers.released import FourMTokenizerModel
    from fourm_hf.tokenizers.released_modalities import ReleasedModalityTokenizer

    shared_path("fixtures", "ml4m")
    sr_name = next((n for n in sorted(TRUNKS) if high_resolution_outputs(TRUNKS[n])), None)
    assert sr_name, f"no fixture trunk under {ML4M} has high-resolution outputs (expected the SR layout)"
    sr_trunk, high = TRUNKS[sr_name], high_resolution_outputs(TRUNKS[sr_name])

    def chainable(base: Trunk) -> list[ReleasedTokenizer]:  # fits the base and its @448 counterpart of the SR trunk
        return [t for t in released_tokenizers if expected_refusal(base, t) is None and trunk_has_output(base, t.modality)
                and not t.is_feature_map and high.get(next((d for d in high if d.split("@")[0] == t.modality), ""), {})
                .get("vocab_size") == t.config["codebook_size"]]

    base_name = max((n for n in sorted(TRUNKS) if n != sr_name), key=lambda n: len(chainable(TRUNKS[n])))
    chain = chainable(TRUNKS[base_name])
    assert chain, "no tokenizer fixture fits both a base trunk and the SR trunk's high-resolution outputs"
    base = TRUNKS[base_name]
    assemble_ml4m(converted[base_name], [str(t.folder) for t in chain], text_tokenizer_for(base), tmp_path / "base",
                  allow_missing_tokenizers=True, num_diffusion_steps=1)
    pipe = pipeline("any-to-any", model=str(tmp_path / "base"))
    friendly = [FRIENDLY[t.modality] for t in chain]  # generated from a caption (rgb among them)
    out = pipe(text="a small red cube on a table", target_modalities=friendly, seed=0, return_tokens=True, num_steps=2)

    sr_model = FourMModel.from_pretrained(str(converted[sr_name])).eval()
    hi_size = next(iter(high.values()))["input_size"]
    tokenizers = {f"{t.modality}@{hi_size}": ReleasedModalityTokenizer(
        FourMTokenizerModel.from_pretrained(t.folder), f"{t.modality}@{hi_size}", image_size=hi_size, num_diffusion_steps=1)
        for t in chain}
    result = super_resolve(sr_model, out["tokens"], tokenizers=tokenizers, seed=0, num_steps=2)
    grid = hi_size // 16
    assert sorted(result["tokens"]) == sorted(d for d in high if d.split("@")[0] in out["tokens"])
    for name, ids in result["tokens"].items():
        assert ids.shape == (1, grid * grid) and ids.dtype == torch_long(), name
        assert int(ids.max()) < high[name]["vocab_size"], name
    for name in tokenizers:
        array = result[name]["array"]
        kind = name.split("@")[0]
        expected = {"tok_rgb": ((1, hi_size, hi_size, 3), np.uint8), "tok_semseg": ((1, hi_size, hi_size), np.int64)}[kind]
        assert (array.shape, array.dtype) == expected, name
        assert result[name]["image"][0].size == (hi_size, hi_size), name
    again = super_resolve(sr_model, out["tokens"], seed=0, num_steps=2)
    assert all(np.array_equal(again["tokens"][n], result["tokens"][n]) for n in result["tokens"])  # seed for seed

    first = chain[0].modality
    with pytest.raises(ValueError, match=rf"tokens\['{first}'\]: the SR model reads {sr_trunk.image_size // 16 * (sr_trunk.image_size // 16)} ids"):
        super_resolve(sr_model, {first: out["tokens"][first][:-1]}, seed=0)
    with pytest.raises(ValueError, match="none of \\['caption'\\] is a base-resolution input"):
        super_resolve(sr_model, {"caption": np.array([5, 6, 3])}, seed=0)
    low = ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(chain[0].folder), f"{first}@{hi_size}",
                                    image_size=sr_trunk.image_size)
    with pytest.raises(ValueError, match=f"wrap it at image_size={hi_size}"):
        super_resolve(sr_model, out["tokens"], tokenizers={f"{first}@{hi_size}": low}, seed=0)


def torch_long():
    import torch

    return torch.int64


# ---- edges (4M-21's tok_sam_edge / tok_canny_edge, one released edge DiVAE) --------------------------------
def edge_outputs(trunk: Trunk) -> dict[str, dict]:
    """The trunk's edge outputs at its resolution, ``{model name: table entry}``, from the fixture table."""
    found = {}
    for domain, entry in trunk.modalities.items():
        name = domain.removesuffix(f"@{trunk.image_size}")
        if (name.startswith("tok_") and name.endswith("_edge") and entry["type"] == "img" and entry["decoder"]
                and entry.get("input_size", trunk.image_size) == trunk.image_size):
            found[name] = entry
    return found


EDGE_TRUNKS = sorted(name for name, trunk in TRUNKS.items() if edge_outputs(trunk))


@pytest.mark.parametrize("trunk_name", EDGE_TRUNKS or [pytest.param("none", marks=pytest.mark.skip(
    reason=f"no fixture trunk under {ML4M} has edge outputs"))])
def test_edges_are_served_when_the_edge_tokenizer_is_named(trunk_name, converted, tmp_path):
    """A tiny random 1-channel DiVAE in the released edge layout, named per modality: RGB -> each edge target is an
    (S, S) float32 map in [0, 1] with a grayscale image; an edge map is an input; bad edge maps are named errors."""
    import numpy as np
    import torch
    from transformers import pipeline

    from fourm_hf.tokenizers.divae import FourMDiVAE, FourMDiVAEConfig
    from fourm_hf.tokenizers.released_layout import save_in_released_layout

    trunk = TRUNKS[trunk_name]
    edges = edge_outputs(trunk)
    vocab = {entry["vocab_size"] for entry in edges.values()}
    assert len(vocab) == 1, f"{trunk_name}: the edge modalities share one tokenizer, but have vocabularies {vocab}"
    torch.manual_seed(0)
    model = FourMDiVAE(FourMDiVAEConfig(enc_type="vit_tiny_d32_l1_h2_enc", dec_type="unet_patched_tiny_c32_r1",
                                        image_size=trunk.image_size, codebook_size=vocab.pop(), latent_dim=8, n_channels=1))
    with torch.no_grad():  # the UNet's zero-initialised output layers would make every decode constant
        for parameter in model.decoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    folder = tmp_path / "4M_tokenizers_edge_8k_224-512"
    save_in_released_layout(model.eval(), folder)
    text = text_tokenizer_for(trunk)
    with pytest.raises(ValueError, match="serves several modalities; name one: tok_sam_edge=.* or tok_canny_edge="):
        assemble_ml4m(converted[trunk_name], [str(folder)], text, tmp_path / "out", allow_missing_tokenizers=True)
    summary = assemble_ml4m(converted[trunk_name], [f"{name}={folder}" for name in sorted(edges)], text,
                            tmp_path / "out", allow_missing_tokenizers=True)
    assert all(name not in summary["undecodable"] for name in edges), summary["undecodable"]
    assert all(get_modality(name).public_name in summary["targets"] for name in edges), summary["targets"]
    pipe = pipeline("any-to-any", model=str(tmp_path / "out"))
    image = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
    size = trunk.image_size
    for name in sorted(edges):
        friendly = get_modality(name).public_name
        out = pipe(image, target_modalities=[friendly], seed=0, return_tokens=True, num_diffusion_steps=2)
        edge = out[friendly]["array"]
        assert edge.shape == (size, size) and edge.dtype == np.float32, (name, edge.shape, edge.dtype)
        assert 0.0 <= edge.min() and edge.max() <= 1.0 and edge.std() > 0, (name, edge.min(), edge.max())
        assert out[friendly]["image"].mode == "L" and out[friendly]["image"].size == (size, size), name
        assert len(out["tokens"][name]) == edges[name]["max_tokens"], name
    friendly = get_modality(sorted(edges)[0]).public_name
    edge_map = (np.random.default_rng(1).random((size, size)) > 0.8).astype(np.float32)
    out = pipe({friendly: edge_map}, target_modalities=["caption"], seed=0, return_tokens=True)
    assert isinstance(out["caption"], str) and len(out["tokens"][sorted(edges)[0]]) == edges[sorted(edges)[0]]["max_tokens"]
    with pytest.raises(ValueError, match=r"edges\['tok_\w+_edge'\]: edge values must lie in \[0, 1\], got \[0.0, 2.0\]"):
        pipe({friendly: edge_map * 2}, target_modalities=["caption"])
    with pytest.raises(ValueError, match=rf"edges\['tok_\w+_edge'\]: expected an edge map of shape \({size}, {size}\)"):
        pipe({friendly: edge_map[:-1]}, target_modalities=["caption"])
