"""4M-21's ``t5_caption`` as a generation input: caption text -> a tiny random T5 encoder (saved locally, as a
catalogue entry would name it) -> ``generate(continuous_inputs=...)`` on the fixture trunks that read it.

Fixture trunks are discovered under ``../shared/fixtures/ml4m`` (released folders with ``t5_caption`` among
their inputs); the text tokenizer is the fixture one of the trunk's caption vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DIR, shared_path

ML4M = SHARED_DIR / "fixtures" / "ml4m"


def t5_trunks() -> list[Path]:
    if not ML4M.is_dir():
        return []
    return [folder for folder in sorted(ML4M.iterdir()) if (folder / "config.json").is_file()
            and "t5_caption" in json.loads((folder / "config.json").read_text()).get("domains_in", [])]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model, text tokenizer, T5 caption encoder) for the first fixture trunk with a t5_caption input."""
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from fourm_hf import FourMModel
    from fourm_hf.processing.t5_captions import T5CaptionEncoder
    from fourm_hf.text.tokenization_fourm import FourMTextTokenizer

    shared_path("fixtures", "ml4m")
    trunks = t5_trunks()
    if not trunks:
        pytest.skip(f"no fixture trunk under {ML4M} reads t5_caption")
    model = FourMModel.from_pretrained(str(trunks[0]))  # a released folder: converted on load
    width = model.config.modality("t5_caption").num_channels
    text_file = sorted(trunks[0].glob("text_tokenizer*.json"))[0]
    text = FourMTextTokenizer(tokenizer_file=str(text_file))
    folder = tmp_path_factory.mktemp("t5")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=len(text), d_model=width, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
                   ).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_file=str(text_file), pad_token="[PAD]", eos_token="[EOS]").save_pretrained(folder)
    return model, text, T5CaptionEncoder.from_pretrained(folder)


def caption_to(model, target: str, conditions: dict, known: dict | None = None, naive: bool = False, **inputs):
    from fourm_hf import build_generation_schedule, generate

    schedule = build_generation_schedule(model.config, list(conditions), [target], decoding_steps=2, greedy=True)
    tokens = generate(model, {n: v for n, v in conditions.items() if n != "t5_caption"}, schedule, known=known,
                      generator=torch.Generator().manual_seed(0), naive=naive, **inputs)
    return tokens[target]


def test_t5_embeddings_condition_generation_on_both_decoding_paths(setup):
    model, text, encoder = setup
    embeddings, mask = encoder(["a small red cube on a table", "two spheres"])
    assert embeddings.shape[:2] == mask.shape and embeddings.shape[2] == encoder.width and embeddings.dtype == torch.float32
    assert mask.sum(dim=1).tolist()[0] > mask.sum(dim=1).tolist()[1]  # the shorter caption is padded
    inputs = {"continuous_inputs": {"t5_caption": embeddings}}
    known = {"t5_caption": mask}
    fast = caption_to(model, "tok_rgb", {"t5_caption": None}, known=dict(known), **inputs)
    slow = caption_to(model, "tok_rgb", {"t5_caption": None}, known=dict(known), naive=True, **inputs)
    assert fast.shape == (2, model.config.num_positions("tok_rgb")) and torch.equal(fast, slow)
    other = caption_to(model, "tok_rgb", {"t5_caption": None}, known={"t5_caption": mask.flip(0)},
                       continuous_inputs={"t5_caption": embeddings.flip(0)})
    assert torch.equal(other, fast.flip(0)), "a sample's tokens depend on another sample's embedding"
    shuffled = caption_to(model, "tok_rgb", {"t5_caption": None}, known=dict(known),
                          continuous_inputs={"t5_caption": embeddings * -1.0})
    assert not torch.equal(shuffled, fast), "the T5 embeddings do not reach the model"


def test_bad_t5_inputs_are_named_errors(setup):
    from fourm_hf import build_generation_schedule, generate

    model, text, encoder = setup
    width = encoder.width
    schedule = build_generation_schedule(model.config, ["t5_caption"], ["tok_rgb"], decoding_steps=1)
    with pytest.raises(ValueError, match=rf"continuous_inputs\['t5_caption'\] must be a float tensor of shape \(B, N <= 77, {width}\)"):
        generate(model, {}, schedule, continuous_inputs={"t5_caption": torch.zeros(1, 3, width + 1)})
    with pytest.raises(ValueError, match="conditioning input 't5_caption' has no tokens"):
        generate(model, {}, schedule)
    caption_only = build_generation_schedule(model.config, ["caption"], ["tok_rgb"], decoding_steps=1)
    with pytest.raises(ValueError, match="is not among the schedule's conditioning inputs"):
        generate(model, {"caption": torch.tensor([[5, 3]])}, caption_only,
                 continuous_inputs={"t5_caption": torch.zeros(1, 3, width)})
    with pytest.raises(ValueError, match=r"known\['t5_caption'\] must be a bool tensor of shape \(1, 3\)"):
        generate(model, {}, schedule, continuous_inputs={"t5_caption": torch.zeros(1, 3, width)},
                 known={"t5_caption": torch.zeros(1, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="t5_caption: caption 0 has .* T5 tokens, more than the modality's 77"):
        encoder(["word " * 100])
    with pytest.raises(ValueError, match="non-empty caption"):
        encoder([" "])
