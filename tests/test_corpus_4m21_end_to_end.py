"""A tiny 4M-21 corpus end to end, in one test (issue 22): photographs -> pseudo-label -> build-corpus ->
write-shards -> the loopback Hub -> 20 training steps of the converted ``fm_4m21_tiny`` in a two-dataset mixture.

1. scikit-image's photographs -> ``fourm-hf pseudo-label`` with every labeller, each a tiny random model of the
   real architecture built here: depth (DPT, normals derived), segmentation (SegFormer), detection (YOLOS),
   caption (BLIP), the ``clip`` feature map (CLIP vision), ``t5_caption`` (T5 encoder), ``sam_instance`` and
   ``sam_edge`` (SAM), ``dinov2`` and ``dinov2_global`` (DINOv2), and the model-free ``canny_edge``,
   ``color_palette`` and ``metadata``. Widths follow the fixtures, not the real models: T5 4096 (the trunk's
   ``t5_caption`` projection), CLIP 512 and DINOv2 768 (the released feature tokenizers' channels).
2. -> ``fourm-hf build-corpus`` at 224 px with a processor of the released tokenizer fixtures (discovered under
   ../shared/fixtures/ml4m/tokenizers) and tiny random models of the released classes where no fixture exists
   (the depth / normal / edge DiVAEs and the DINOv2 feature-map VQ-VAE, codebooks the trunk's vocabularies), the
   trunk's own mini text tokenizer. ``metadata`` and ``color_palette`` are labelled but not tokenized: their
   values (0..999, 0..255) need the released tokenizer's 1000 coordinate bins, the mini one has 32.
3. -> ``fourm-hf write-shards`` twice (the corpus; its captions alone: the text-only dataset), both uploaded to
   the loopback Hub and streamed from ``hf://datasets/...``.
4. -> 20 steps of ``fourm-hf train``'s Trainer (``model.pretrained``: the converted trunk restricted to the
   modalities the corpus has, ``fourm_hf.training.finetune.restrict_modalities``), weights 3 : 1. The dataset of
   every trained sample is recorded: its counts match the weights (chi-square, p > 0.01); the loss is finite
   and the weights change.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import load_from_disk
from PIL import Image

from fourm_hf import FourMDiVAE, FourMDiVAEConfig, FourMTokenizerModel, FourMViTVQVAE, FourMViTVQVAEConfig
from fourm_hf.cli import main as cli_main
from fourm_hf.data.parquet_shards import open_parquet_shards
from fourm_hf.ml4m.conversion import load_reference_model, resolve_reference_files
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.processing.sequence_tokens import SequenceTokenizers
from fourm_hf.text.tokenization_fourm import FourMTextTokenizer
from fourm_hf.tokenizers.released_layout import save_in_released_layout
from fourm_hf.tokenizers.released_modalities import ReleasedModalityTokenizer
from fourm_hf.training.finetune import restrict_modalities
from fourm_hf.training.pretrain import build_trainer, load_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer, huggingface_hub_pointed_at  # noqa: E402
from test_build_corpus_4m21 import _fixture_folders  # noqa: E402
from test_finetune_released import fourm21_folder  # noqa: E402
from test_pseudo_label import _processor, build_tiny_models  # noqa: E402
from test_pseudo_label_4m21_models import build_tiny_sam_and_dinov2  # noqa: E402
from test_pseudo_label_4m21_simple import build_tiny_t5  # noqa: E402

LABEL_SIZE, IMAGE_SIZE, CROPS, STEPS, BATCH = 48, 224, 2, 20, 4
PHOTOS = {"astronaut": (56, 48), "coffee": (48, 64), "chelsea": (60, 40), "rocket": (44, 44)}
WEIGHTS = {"images": 3.0, "captions": 1.0}
NOT_TOKENIZED = ("metadata", "color_palette")  # need 1000 coordinate bins; the trunk's mini tokenizer has 32
TINY_VIT = dict(enc_type="vit_tiny_d32_l1_h2_enc", image_size=IMAGE_SIZE, latent_dim=8)


# ---- 1. the labellers' models ---------------------------------------------------------------------------
def trunk_text_tokenizer(trunk: Path) -> FourMTextTokenizer:
    return FourMTextTokenizer(tokenizer_file=str(next(trunk.glob("text_tokenizer*.json"))))


def build_label_models(root: Path, text: FourMTextTokenizer) -> dict:
    """Tiny random models of every labeller, saved under ``root`` (name -> folder). The detector's classes and
    the captioner's words are words of the trunk's text tokenizer ``text``, so that they tokenize."""
    import transformers as T

    words = text.convert_ids_to_tokens(list(range(text.first_wordpiece_id, len(text))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # depth, segmentation, detection, caption (+ a 32-wide CLIP, not used)
        paths = build_tiny_models(str(root / "4m7"), det_classes=words[-15:-12], caption_words=words[-12:])
        paths.update(build_tiny_sam_and_dinov2(str(root / "sam_dinov2"), dinov2_width=768))
        paths["t5"] = build_tiny_t5(root / "t5", d_model=4096)
        torch.manual_seed(0)
        clip = T.CLIPVisionConfig(hidden_size=512, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8)
        paths["features"] = str(root / "clip512")
        T.CLIPVisionModel(clip).eval().save_pretrained(paths["features"])
        _processor("CLIPImageProcessor", size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(paths["features"])
    return paths


def write_photos(folder: Path) -> Path:
    from skimage import data

    folder.mkdir(parents=True)
    for name, size in PHOTOS.items():
        Image.fromarray(getattr(data, name)()).resize(size, Image.Resampling.BILINEAR).save(folder / f"{name}.png")
    return folder


# ---- 2. the processor of released tokenizers -----------------------------------------------------------
def _tiny_tokenizer(model_class, config_class, seed: int, **config):
    torch.manual_seed(seed)
    return model_class(config_class(**{**TINY_VIT, **config})).eval()


def assemble_processor(root: Path, trunk: Path) -> Path:
    """The released tokenizer fixtures plus tiny ones of the released classes, codebooks = the trunk's vocabularies."""
    folders = _fixture_folders()
    divae = dict(dec_type="unet_patched_tiny_c32_r1", codebook_size=128)
    tiny = {"tok_depth": _tiny_tokenizer(FourMDiVAE, FourMDiVAEConfig, 1, n_channels=1, **divae),
            "tok_normal": _tiny_tokenizer(FourMDiVAE, FourMDiVAEConfig, 2, n_channels=3, **divae),
            "tok_canny_edge": _tiny_tokenizer(FourMDiVAE, FourMDiVAEConfig, 3, n_channels=1, **divae),
            "tok_dinov2": _tiny_tokenizer(FourMViTVQVAE, FourMViTVQVAEConfig, 4, dec_type="vit_tiny_d32_l1_h2_dec",
                                          patch_proj=False, n_channels=768, codebook_size=128, patch_size=14)}
    for name, model in tiny.items():
        save_in_released_layout(model, root / "released" / name)
        folders[name] = root / "released" / name
    folders["tok_sam_edge"] = folders["tok_canny_edge"]  # one released edge tokenizer serves both
    vqvaes, sequence = {}, SequenceTokenizers()
    grids = {"tok_clip": IMAGE_SIZE // 16, "tok_dinov2": IMAGE_SIZE // 14}  # feature maps: the trunk's grids
    for name, folder in folders.items():
        model = FourMTokenizerModel.from_pretrained(folder)
        if name == "sam_instance":
            sequence[name] = ReleasedModalityTokenizer(model, name, "instance", image_size=64)
        elif name != "human_poses":  # no faithful pose labeller: nothing to tokenize
            vqvaes[name] = ReleasedModalityTokenizer(model, name, image_size=IMAGE_SIZE, grid_size=grids.get(name))
    text = trunk_text_tokenizer(trunk)
    image_processor = FourMImageProcessor(image_size=IMAGE_SIZE, num_semseg_classes=vqvaes["tok_semseg"].config.num_classes,
                                          crop_scale=(0.5, 1.0))
    processor = FourMProcessor(image_processor, text, vqvaes=vqvaes, max_text_length=64)
    processor.sequence_tokenizers = sequence
    processor.save_pretrained(root / "processor")
    return root / "processor"


# ---- 4. the trunk and the mixture -----------------------------------------------------------------------
def restricted_trunk(trunk: Path, corpus_columns, out: Path) -> tuple[Path, list[str]]:
    """The converted trunk keeping only the modalities the corpus has (``rgb`` from its ``rgb_image``)."""
    model = load_reference_model(*resolve_reference_files(str(trunk)))
    have = set(corpus_columns) | {"rgb"}
    inputs = [name for name in model.config.input_modalities if name in have]
    outputs = [name for name in model.config.output_modalities if name in have]
    restrict_modalities(model, input_modalities=inputs, output_modalities=outputs)
    model.save_pretrained(out)
    return out, list(dict.fromkeys(inputs + outputs))


def mixture_config(root: Path, trunk: Path, images: str, captions: str) -> Path:
    settings = {
        "model": {"pretrained": str(trunk)},
        "masking": {"strategy": "mix_mod21_all2allmix_rgb2all_capT5bias", "input_budget": 64, "target_budget": 64, "seed": 2},
        "data": {"train": [
            {"name": "images", "path": images, "weight": WEIGHTS["images"], "shuffle_buffer": 4},
            {"name": "captions", "path": captions, "modalities": ["caption"], "weight": WEIGHTS["captions"],
             "masking": {"strategy": "all2all", "input_budget": 4, "target_budget": 4}, "shuffle_buffer": 4},
        ], "validate_samples": 2},
        "training": {"output_dir": str(root / "run"), "max_steps": STEPS, "per_device_train_batch_size": BATCH,
                     "learning_rate": 2e-3, "lr_scheduler_type": "constant", "warmup_steps": 0, "logging_steps": 1,
                     "save_strategy": "no", "disable_tqdm": True, "dataloader_num_workers": 0,
                     "dataloader_pin_memory": False, "seed": 1, "data_seed": 3, "report_to": []},
    }
    path = root / "mixture.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


@pytest.fixture
def one_thread():
    """One torch thread: on a loaded machine two threads made the training steps about 15 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def cli(*arguments) -> None:
    assert cli_main([str(a) for a in arguments]) == 0, arguments


@pytest.mark.slow  # about 30 s on one core: eleven tiny models, 224-px tokenizers, 20 steps
def test_photographs_to_a_4m21_corpus_to_a_trained_mixture(tmp_path, monkeypatch, one_thread):
    import datasets
    from scipy.stats import chisquare

    # datasets sleeps 5 s whenever a pass over streamed Parquet ends (an Arrow thread-shutdown workaround); the
    # 8-row datasets here end a pass every few steps, so a short pause keeps the test short
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.1)

    pytest.importorskip("skimage", reason="scikit-image provides the photographs")
    trunk = fourm21_folder()  # skips when ../shared is absent
    models = build_label_models(tmp_path / "models", trunk_text_tokenizer(trunk))

    # 1. photographs -> pseudo-label
    photos = write_photos(tmp_path / "photos")
    cli("pseudo-label", "--images", photos, "--out", tmp_path / "labelled", "--size", LABEL_SIZE, "--batch-size", 2,
        "--depth-model", models["depth"], "--segmentation-model", models["segmentation"],
        "--detection-model", models["detection"], "--detection-threshold", 0.0, "--caption-model", models["caption"],
        "--caption-max-new-tokens", 12, "--feature-model", models["features"], "--t5-model", models["t5"],
        "--sam-model", models["sam"], "--sam-points-per-side", 4, "--sam-query-points-per-side", 2,
        "--sam-pred-iou-thresh", 0.0, "--sam-stability-thresh", 0.0,
        "--dinov2-model", models["dinov2"], "--canny", "--color-palette", "--metadata")
    labelled = load_from_disk(str(tmp_path / "labelled"))
    contract = {"rgb", "depth", "normal", "semseg", "boxes", "clip", "caption", "t5_caption", "sam_instance", "sam_edge",
                "canny_edge", "color_palette", "metadata", "dinov2", "dinov2_global"}
    assert contract <= set(labelled.column_names) and len(labelled) == len(PHOTOS)
    assert labelled.features["t5_caption"].shape[1] == 4096 and labelled.features["dinov2"].shape[2] == 768

    # 2. -> build-corpus with the released tokenizers
    processor = assemble_processor(tmp_path, trunk)
    tokenized = ["rgb_image", "tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip", "tok_dinov2",
                 "tok_dinov2_global", "tok_canny_edge", "tok_sam_edge", "caption", "det", "sam_instance", "t5_caption"]
    cli("build-corpus", "--dataset", tmp_path / "labelled", "--processor", processor, "--out", tmp_path / "corpus",
        "--crops", CROPS, "--batch-size", 2, "--seed", 0, "--modalities", *tokenized)
    corpus = load_from_disk(str(tmp_path / "corpus"))
    assert len(corpus) == len(PHOTOS) * CROPS and set(tokenized) <= set(corpus.column_names)
    assert not set(NOT_TOKENIZED) & set(corpus.column_names)
    assert any(len(row) > 1 for row in corpus["sam_instance"])  # instances, not only [EOS]
    trunk_dir, modalities = restricted_trunk(trunk, corpus.column_names, tmp_path / "trunk")
    assert set(modalities) == {"rgb", *tokenized} - {"rgb_image"}  # rgb (pixels) is read from rgb_image
    config = json.loads((trunk_dir / "config.json").read_text())
    for name in modalities:  # every id fits the trunk's vocabulary
        spec = config["modality_specs"][name]
        if spec.get("vocab_size"):
            ids = np.concatenate([np.asarray(row, dtype=np.int64).ravel() for row in corpus[name]])
            assert ids.min() >= 0 and ids.max() < spec["vocab_size"], name

    # 3. -> Parquet shards on the loopback Hub
    cli("write-shards", "--dataset", tmp_path / "corpus", "--out", tmp_path / "shards" / "images", "--shard-size", 4)
    cli("write-shards", "--dataset", tmp_path / "corpus", "--out", tmp_path / "shards" / "captions", "--shard-size", 2,
        "--columns", "caption")
    from huggingface_hub import HfApi

    with HubServer() as server, huggingface_hub_pointed_at(server, tmp_path / "cache"):
        api = HfApi(endpoint=server.url, token=server.token)
        for name in WEIGHTS:
            api.create_repo(f"fourm-tester/{name}", repo_type="dataset")
            api.upload_folder(folder_path=str(tmp_path / "shards" / name), repo_id=f"fourm-tester/{name}", repo_type="dataset")
        streamed = next(iter(open_parquet_shards("hf://datasets/fourm-tester/images")))
        assert np.array_equal(streamed["tok_rgb"], corpus[0]["tok_rgb"]) and streamed["pixel_values"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)

        # 4. -> 20 steps of the converted fm_4m21_tiny on the two-dataset mixture
        config_path = mixture_config(tmp_path, trunk_dir, "hf://datasets/fourm-tester/images", "hf://datasets/fourm-tester/captions")
        trainer = build_trainer(load_settings(config_path))
        drawn, collator = [], trainer.data_collator

        def recording(samples):
            drawn.extend(int(sample["dataset_index"]) for sample in samples)
            return collator(samples)

        trainer.data_collator = recording
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        trainer.train()
        fetched = [path for _, path in server.requests if "/resolve/" in path and path.endswith(".parquet")]
        assert any("/datasets/fourm-tester/images/" in p for p in fetched) and any("/captions/" in p for p in fetched)

    assert trainer.state.global_step == STEPS and len(drawn) == (STEPS + 1) * BATCH  # the loader reads one batch ahead
    observed = np.bincount(drawn[: STEPS * BATCH], minlength=len(WEIGHTS))
    expected = np.array(list(WEIGHTS.values())) / sum(WEIGHTS.values()) * STEPS * BATCH
    print(f"datasets of the {STEPS * BATCH} trained samples: {dict(zip(WEIGHTS, observed.tolist()))}")
    assert chisquare(observed, expected).pvalue > 0.01, (observed, expected)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses), losses
    changed = [name for name, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert any(name.startswith("encoder.") for name in changed) and any("decoder_embeddings.caption" in n for n in changed)
