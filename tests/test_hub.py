"""push_to_hub of model and processor, the generated model card, ``fourm-hf push-to-hub``, loading back
from the Hub; all against the Hub-compatible test server of ``hub_server.py`` on 127.0.0.1."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModel, AutoProcessor

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf import cli, hub
from fourm_hf.data.scenes import SCENE_CLASSES, render_scene
from fourm_hf.modeling.modeling_fourm import FourMModel
from fourm_hf.testing_utils import random_packed_batch, tiny_config, tiny_vqvae
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.text.tokenization_fourm import train_text_tokenizer
from hub_server import HubServer, huggingface_hub_pointed_at

TOKEN = "hf_fourm_test_token"
METRICS = {"depth": {"abs_rel": 0.123456, "delta1": 0.875}, "caption": {"bleu4": 0.05}, "num_scenes": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The test Hub, with huggingface_hub pointed at it (HF_ENDPOINT, a fake token, an empty cache).

    huggingface_hub reads HF_ENDPOINT and the cache folder when it is imported, so the module constants
    that hold them are set too; a child process sees the environment variables.
    """
    with HubServer(token=TOKEN) as hub_server, huggingface_hub_pointed_at(hub_server, tmp_path_factory.mktemp("hf_home")):
        yield hub_server


@pytest.fixture(scope="module")
def scene():
    return render_scene(0, 48)


@pytest.fixture(scope="module")
def processor(scene):
    tokenizer = train_text_tokenizer([scene["caption"], "a red cube on a blue floor."], vocab_size=200,
                                     class_names=sorted(SCENE_CLASSES), num_sentinels=16, coord_bins=64)
    vqvaes = {"tok_rgb": tiny_vqvae("rgb", seed=1), "tok_depth": tiny_vqvae("depth", seed=2)}  # 256 codes each
    return FourMProcessor(FourMImageProcessor(image_size=32, num_semseg_classes=len(SCENE_CLASSES)), tokenizer,
                          vqvaes=vqvaes, max_text_length=24)


@pytest.fixture(scope="module")
def model(processor):
    """A tiny 4M whose vocabularies match the processor (the pipeline checks that)."""
    specs = copy.deepcopy(tiny_config().modality_specs)
    for name in ("caption", "det"):
        specs[name]["vocab_size"] = len(processor.tokenizer)
    for name, vqvae in processor.vqvaes.items():
        specs[name]["vocab_size"] = vqvae.config.vocab_size
    torch.manual_seed(0)
    return FourMModel(tiny_config(modality_specs=specs)).eval()


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert list(expected_state) == list(actual_state)
    for name, tensor in expected_state.items():
        assert torch.equal(tensor, actual_state[name]), name


def read_card(server, repo_id) -> tuple[dict, str]:
    text = server.files(repo_id)["README.md"].decode()
    _, front_matter, body = text.split("---\n", 2)
    return yaml.safe_load(front_matter), body


# ---- model + processor round trip ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pushed(server, model, processor):
    """The model and then the processor pushed to one repo, each in one commit."""
    repo_id = "fourm-tester/tiny-4m"
    model_commit = model.push_to_hub(repo_id, license="mit", datasets=["fourm-tester/scenes"],
                                     training_data="Rendered scenes with exact depth and captions.", metrics=METRICS)
    card_after_model = server.files(repo_id)["README.md"]
    processor_commit = processor.push_to_hub(repo_id)
    return dict(repo_id=repo_id, commits=(model_commit, processor_commit), card_after_model=card_after_model)


def test_model_and_processor_load_back_identically_from_the_hub(server, pushed, model, processor, scene):
    repo_id = pushed["repo_id"]
    repo = server.repos[repo_id]
    assert len(repo.commits) == 3  # creation + one commit per push
    assert [c.oid for c in pushed["commits"]][-1] == repo.branches["main"]
    files = server.files(repo_id)
    for name in ("config.json", "model.safetensors", "modeling_fourm.py", "processor_config.json", "tokenizer.json",
                 "preprocessor_config.json", "processing_fourm.py", "vqvae/tok_rgb/model.safetensors",
                 "vqvae/tok_depth/config.json", "README.md"):
        assert name in files, name

    loaded = AutoModel.from_pretrained(repo_id).eval()
    assert isinstance(loaded, FourMModel)
    assert_same_weights(model, loaded)
    batch = random_packed_batch(model.config, seed=1)
    with torch.no_grad():
        assert loaded(**batch).loss.item() == model(**batch).loss.item()

    loaded_processor = AutoProcessor.from_pretrained(repo_id)
    assert isinstance(loaded_processor, FourMProcessor)
    assert sorted(loaded_processor.vqvaes) == ["tok_depth", "tok_rgb"]
    for name, vqvae in processor.vqvaes.items():
        assert_same_weights(vqvae, loaded_processor.vqvaes[name])
    inputs = dict(images=scene["rgb"], depth=scene["depth"], text=scene["caption"])
    expected, actual = processor(**inputs), loaded_processor(**inputs)
    assert sorted(expected) == sorted(actual)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_model_card_metadata_body_and_custom_pipeline(server, pushed, model, processor):
    repo_id = pushed["repo_id"]
    metadata, body = read_card(server, repo_id)
    assert metadata["pipeline_tag"] == "any-to-any"
    assert metadata["library_name"] == "transformers"
    assert metadata["license"] == "mit"
    assert metadata["datasets"] == ["fourm-tester/scenes"]
    assert {"fourm", "4m", "custom_code"} <= set(metadata["tags"])
    # modalities with their vocabularies and token counts (tiny config: 4x4 grid, 24-token captions)
    assert "| `tok_depth` | image_tokens | yes | yes | 256 | 16 |" in body
    assert "| `tok_normal` | image_tokens | yes | yes | 32 | 16 |" in body
    assert f"| `caption` | sequence | yes | yes | {len(processor.tokenizer)} | 24 |" in body
    assert "| `rgb` | pixels | yes | no | - | 16 |" in body
    assert "| depth / abs_rel | 0.1235 |" in body and "| num_scenes | 64 |" in body
    assert "Rendered scenes with exact depth and captions." in body
    assert f'pipeline("any-to-any", model="{repo_id}", trust_remote_code=True)' in body
    assert f'AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)' in body
    # the processor push (a repo that already has a card) left the model's card alone
    assert server.files(repo_id)["README.md"] == pushed["card_after_model"]

    config = json.loads(server.files(repo_id)["config.json"])
    assert config["auto_map"]["AutoModel"] == "modeling_fourm.FourMModel"
    if (hub.PACKAGE_ROOT / hub.PIPELINE_MODULE).is_file():
        assert config["custom_pipelines"] == {"any-to-any": {"impl": "any_to_any.FourMAnyToAnyPipeline",
                                                             "pt": ["AutoModel"], "type": "multimodal"}}
        assert "any_to_any.py" in server.files(repo_id)
    else:  # no pipeline module in this installation: no entry pointing at a missing file
        assert "custom_pipelines" not in config


PIPELINE_OPTIONS = dict(target_modalities=["depth", "caption"], num_steps=2, seed=0, return_tokens=True)


@pytest.fixture(scope="module")
def installed_pipeline_tokens(server, pushed, scene):
    """Tokens the installed FourMAnyToAnyPipeline generates from the pushed repo."""
    if not (hub.PACKAGE_ROOT / hub.PIPELINE_MODULE).is_file():
        pytest.skip("this installation has no any-to-any pipeline module")
    from transformers import pipeline

    from fourm_hf.pipelines.any_to_any import FourMAnyToAnyPipeline

    generator = pipeline("any-to-any", model=pushed["repo_id"], pipeline_class=FourMAnyToAnyPipeline)
    assert isinstance(generator, FourMAnyToAnyPipeline) and isinstance(generator.processor, FourMProcessor)
    out = generator(Image.fromarray(scene["rgb"]), **PIPELINE_OPTIONS)
    out = out[0] if isinstance(out, list) else out
    return {name: ids.tolist() for name, ids in out["tokens"].items()}


def test_installed_pipeline_runs_from_the_hub_repo(server, pushed, installed_pipeline_tokens):
    assert len(installed_pipeline_tokens["tok_depth"]) == 16 and isinstance(installed_pipeline_tokens["caption"], list)
    from transformers import pipeline

    # the repo declares its own pipeline: transformers asks before running its code (the card says so)
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("any-to-any", model=pushed["repo_id"])


def test_pipeline_with_trust_remote_code_where_fourm_hf_cannot_be_imported(server, pushed, scene, tmp_path,
                                                                            installed_pipeline_tokens):
    """The repo's custom_pipelines entry + flat code: a process without fourm_hf runs the pipeline and
    generates the same tokens as the installed pipeline class. (transformers executes the flat model and
    processor modules again when AutoModel / AutoProcessor load them, so the pipeline recognises a 4M
    model by model_type and behaviour, not by isinstance.)"""
    np.save(tmp_path / "rgb.npy", scene["rgb"])
    code = (
        "import sys, json; sys.modules['fourm_hf'] = None  # make the package unimportable\n"
        "import numpy as np; from PIL import Image; from transformers import pipeline\n"
        f"pipe = pipeline('any-to-any', model={pushed['repo_id']!r}, trust_remote_code=True)\n"
        "assert 'transformers_modules' in type(pipe).__module__ and type(pipe).__name__ == 'FourMAnyToAnyPipeline', type(pipe)\n"
        "assert 'transformers_modules' in type(pipe.model).__module__, type(pipe.model)\n"
        f"out = pipe(Image.fromarray(np.load({str(tmp_path / 'rgb.npy')!r})), **{PIPELINE_OPTIONS!r})\n"
        "out = out[0] if isinstance(out, list) else out\n"
        "print(json.dumps({name: ids.tolist() for name, ids in out['tokens'].items()}))\n"
    )
    environment = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == installed_pipeline_tokens


def test_parameter_count_in_card_matches_the_weights(tmp_path, model):
    model.save_pretrained(tmp_path)
    card = hub.write_model_card(tmp_path, "me/x").read_text()
    count = sum(t.numel() for t in model.state_dict().values())
    assert f"| parameters | {count:,} |" in card


def test_processor_save_pretrained_with_push_to_hub(server, processor, tmp_path):
    folder = tmp_path / "tiny-4m-processor"
    processor.save_pretrained(folder, push_to_hub=True, repo_id="fourm-tester/processor-only")
    files = server.files("fourm-tester/processor-only")
    local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert local <= set(files) and "vqvae/tok_depth/model.safetensors" in local
    for name in local:
        assert files[name] == (folder / name).read_bytes(), name
    metadata, body = read_card(server, "fourm-tester/processor-only")  # a new repo: the card describes the tokenizers
    assert metadata["pipeline_tag"] == "any-to-any" and "| `tok_depth` | VQ-VAE reading `depth` at 32 px | 256 | 4x4 |" in body


# ---- the command -----------------------------------------------------------------------------------------
def test_cli_pushes_a_checkpoint_folder_in_one_commit(server, model, processor, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    (tmp_path / "eval.json").write_text(json.dumps(METRICS))
    code = cli.main(["push-to-hub", "--checkpoint", str(checkpoint), "--repo-id", "fourm-tester/cli-4m", "--private",
                     "--card-metrics", str(tmp_path / "eval.json"), "--dataset", "fourm-tester/scenes"])
    assert code == 0, capsys.readouterr()
    assert "fourm-tester/cli-4m" in capsys.readouterr().out
    repo = server.repos["fourm-tester/cli-4m"]
    assert repo.private and len(repo.commits) == 2
    files = server.files("fourm-tester/cli-4m")
    local = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
    assert local - {"config.json"} <= set(files)  # config.json gains the pipeline entry on the way
    assert not (checkpoint / "README.md").exists()  # the local folder is left as it was
    metadata, body = read_card(server, "fourm-tester/cli-4m")
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["fourm-tester/scenes"]
    assert "| caption / bleu4 | 0.05 |" in body and "## Tokenizers" in body and "## Modalities" in body
    assert_same_weights(model, AutoModel.from_pretrained("fourm-tester/cli-4m"))


# ---- unhappy paths ---------------------------------------------------------------------------------------
def test_pushing_a_folder_that_is_not_a_checkpoint_fails_before_any_request(server, tmp_path):
    before = len(server.requests)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a 4M checkpoint"):
        hub.push_checkpoint(tmp_path, "fourm-tester/nothing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        hub.push_checkpoint(tmp_path, "fourm-tester/nothing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "fourm"}))
    with pytest.raises(ValueError, match="no model.safetensors"):
        hub.push_checkpoint(tmp_path, "fourm-tester/nothing")
    with pytest.raises(ValueError, match="not a folder"):
        hub.push_checkpoint(tmp_path / "missing", "fourm-tester/nothing")
    with pytest.raises(TypeError, match="expected a folder, a FourMModel or a FourMProcessor"):
        hub.push_checkpoint(object(), "fourm-tester/nothing")
    with pytest.raises(TypeError, match=r"unexpected arguments \['licence'\]"):
        hub.push_checkpoint(tmp_path, "fourm-tester/nothing", licence="mit")
    with pytest.raises(ValueError, match=r"metrics\['depth / curve'\]"):
        hub.push_checkpoint(tmp_path, "fourm-tester/nothing", metrics={"depth": {"curve": [0.1]}})
    assert len(server.requests) == before and "fourm-tester/nothing" not in server.repos


def test_hub_errors_reach_the_user_with_context(server, model, tmp_path, capsys):
    server.fail_next("commit", 422, "storage backend unavailable")  # (a 500 would be retried)
    with pytest.raises(HfHubHTTPError, match="storage backend unavailable") as raised:
        model.push_to_hub("fourm-tester/broken")
    assert "pushing the 4M model checkpoint to 'fourm-tester/broken'" in str(raised.value)
    assert len(server.repos["fourm-tester/broken"].commits) == 1  # nothing was committed

    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        model.push_to_hub("fourm-tester/broken", token="hf_wrong_token")

    model.save_pretrained(tmp_path / "checkpoint")
    server.fail_next("preupload", 403, "You have read access only")
    assert cli.main(["push-to-hub", "--checkpoint", str(tmp_path / "checkpoint"), "--repo-id", "fourm-tester/broken"]) == 1
    assert "You have read access only" in capsys.readouterr().err


def test_bad_card_inputs_are_refused(server, tmp_path, model, capsys):
    with pytest.raises(ValueError, match=r"metrics\['depth / curve'\]"):
        hub.model_card(model.config.to_dict(), metrics={"depth": {"curve": [0.1, 0.2]}})
    with pytest.raises(ValueError, match="model_type 'bert'"):
        hub.model_card({"model_type": "bert"})
    with pytest.raises(TypeError, match="lists of strings"):
        hub.model_card(None, datasets="fourm-tester/scenes")
    (tmp_path / "eval.json").write_text(json.dumps({"depth": {"curve": [1, 2]}}))
    model.save_pretrained(tmp_path / "checkpoint")
    capsys.readouterr()
    for metrics, message in (("eval.json", "curve"), ("missing.json", "is not a file")):  # one line each, exit 2
        assert cli.main(["push-to-hub", "--checkpoint", str(tmp_path / "checkpoint"), "--repo-id", "fourm-tester/x",
                         "--card-metrics", str(tmp_path / metrics)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fourm-hf push-to-hub: error: ") and message in err and "\n" not in err
    assert "fourm-tester/x" not in server.repos


def test_remote_code_closure_lists_imported_modules_first():
    from fourm_hf.remote_code import remote_code_closure

    closure = remote_code_closure("modeling/modeling_fourm.py")
    assert closure[-1] == "modeling/modeling_fourm.py"
    assert closure.index("modeling/layers.py") < closure.index("modeling/modeling_fourm.py")
    assert {"configuration_fourm.py", "modalities.py", "remote_code.py"} <= set(closure)
    assert all((hub.PACKAGE_ROOT / path).is_file() for path in closure)


def test_remote_code_closure_follows_subpackages_and_flattens_them():
    """The pipeline imports a subpackage (``from ..modeling.generation import``): its ``__init__.py`` comes
    after its modules and is written flat as ``generation.py``, which the flattened import reads."""
    from fourm_hf.remote_code import flat_name, remote_code_closure

    closure = remote_code_closure("pipelines/any_to_any.py")
    packages = [path for path in closure if path.endswith("/__init__.py")]
    assert packages, "expected the pipeline to import at least one subpackage"
    for package in packages:
        folder = package[: -len("__init__.py")]
        members = [path for path in closure if path.startswith(folder) and path != package]
        assert members and all(closure.index(path) < closure.index(package) for path in members)
        assert flat_name(package) == f"{Path(folder).name}.py"
    names = [flat_name(path) for path in closure]
    assert len(set(names)) == len(names), "two modules would share a flat file name"
