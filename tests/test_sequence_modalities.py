"""4M-21's text-serialised modalities (metadata, colour palette, human poses, SAM instances) in the
processor and the any-to-any pipeline.

The reference's own strings (``raw_samples`` of every FM fixture JSON under ../shared/fixtures/ml4m) go
structured data -> processor ids -> ``processor.decode`` and back unchanged, one sample and batched;
the 4M-21-layout trunks among the fixtures (discovered as tests/test_assemble_ml4m.py does) are
assembled with their text tokenizer and the pipeline generates every such output from an RGB image
and conditions on them as inputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import SHARED_DIR
from fourm_hf.modalities import get_modality
from fourm_hf.pipelines.grid import grid_size, make_grid
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.text.sequence_modalities import (
    SEQUENCE_MAX_LENGTHS,
    SEQUENCE_MODALITIES,
    decode_sequences,
    id_split_for,
    to_text,
)
from fourm_hf.text.text_serialization import ColorPalette, HumanPose, SamPoint, parse_serialized
from fourm_hf.text.tokenization_fourm import FourMTextTokenizer
from test_assemble_ml4m import TRUNKS, text_tokenizer_for

ML4M = SHARED_DIR / "fixtures" / "ml4m"


def _raw_sample_sets() -> list:
    """(fixture name, its text tokenizer file, raw samples) of every FM fixture with 4M-21 raw strings."""
    found = []
    for meta_path in sorted(ML4M.glob("*/*.json")) if ML4M.is_dir() else []:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("raw_samples"), list):
            continue
        tokenizer_file = meta_path.parent / meta.get("text_tokenizer", {}).get("file", "")
        samples = [s for s in meta["raw_samples"] if any(m in s for m in SEQUENCE_MODALITIES)]
        if samples and tokenizer_file.is_file():
            found.append(pytest.param(tokenizer_file, samples, id=meta_path.parent.name))
    return found or [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no 4M-21 raw samples under {ML4M}"))]


def _processor(tokenizer_file) -> FourMProcessor:
    return FourMProcessor(FourMImageProcessor(image_size=224), FourMTextTokenizer(tokenizer_file=str(tokenizer_file)))


def _text_of(raw) -> str:
    return " ".join(raw) if isinstance(raw, list) else raw  # metadata is stored as its list of chunks


def test_max_lengths_are_the_registry_lengths():
    assert SEQUENCE_MAX_LENGTHS == {name: get_modality(name).max_length for name in SEQUENCE_MODALITIES}


# ---- processor: structured data <-> ids ----------------------------------------------------------------
@pytest.mark.parametrize("tokenizer_file, samples", _raw_sample_sets())
def test_structured_data_round_trips_through_the_processor(tokenizer_file, samples):
    processor = _processor(tokenizer_file)
    id_split = id_split_for(processor.tokenizer)
    for modality in SEQUENCE_MODALITIES:
        texts = [_text_of(s[modality]) for s in samples if modality in s]
        if not texts:
            continue
        structured = [parse_serialized(modality, text, id_split=id_split) for text in texts]
        for text, data in zip(texts, structured):  # one sample: structured data and its text give the same ids
            ids = processor(**{modality: data})[modality]
            assert ids.shape[0] == 1 and ids.dtype == torch.long
            assert torch.equal(ids, processor(**{modality: text})[modality])
            assert ids[0, -1].item() == processor.tokenizer.eos_token_id and ids.shape[1] <= SEQUENCE_MAX_LENGTHS[modality]
            (decoded,) = processor.decode({modality: ids})[modality]
            assert decoded == {"text": text.strip(), "data": data, "error": None}
        batch = processor(**{modality: structured})[modality]  # a batch: right-padded with [PAD]
        assert batch.shape[0] == len(texts)
        decoded = processor.decode({modality: batch})[modality]
        assert [d["data"] for d in decoded] == structured and all(d["error"] is None for d in decoded)
        lengths = (batch != 0).sum(dim=1).tolist()
        assert lengths == [len(processor.tokenizer.encode_for_model(t)) for t in texts]


@pytest.mark.parametrize("tokenizer_file, samples", _raw_sample_sets())
def test_plain_python_forms_give_the_same_ids(tokenizer_file, samples):
    processor = _processor(tokenizer_file)
    id_split = id_split_for(processor.tokenizer)
    plain = {
        "color_palette": lambda data: [list(color) for color in data.colors],
        "human_poses": lambda data: [asdict(person) for person in data],
        "sam_instance": lambda data: [asdict(point) for point in data],
        "metadata": lambda data: dict(data),
    }
    checked = 0
    for sample in samples:
        for modality in SEQUENCE_MODALITIES:
            if modality in sample:
                data = parse_serialized(modality, _text_of(sample[modality]), id_split=id_split)
                ids = processor(**{modality: data})[modality]
                assert torch.equal(processor(**{modality: plain[modality](data)})[modality], ids), modality
                checked += 1
    assert checked


@pytest.mark.parametrize("tokenizer_file, samples", _raw_sample_sets())
def test_text_that_does_not_parse_gives_the_text_and_an_error(tokenizer_file, samples):
    processor = _processor(tokenizer_file)
    tokenizer = processor.tokenizer
    broken = {"color_palette": "v1=3 v0=1 v0=2", "metadata": "v0=1 v0=2", "human_poses": "human v0=1 v1=2",
              "sam_instance": "point v0=1 v1=2 human"}
    rows = [tokenizer.encode_for_model(text) for text in broken.values()]
    width = max(len(row) for row in rows)
    for (modality, text), row in zip(broken.items(), rows):
        padded = torch.tensor([row + [0] * (width - len(row)), row + [0] * (width - len(row))])
        decoded = processor.decode({modality: padded})[modality]
        assert len(decoded) == 2
        for entry in decoded:
            assert entry["text"] == text and entry["data"] is None
            assert entry["error"].startswith(f"{modality}: ") and len(entry["error"]) > len(modality) + 2
    # ids the tokenizer would never write for it (a sentinel, [UNK], words) are text that does not parse either
    (entry,) = decode_sequences(tokenizer, "color_palette", [[tokenizer.sentinel_token_id(1), 1, 3]])
    assert entry["data"] is None and "color_palette" in entry["error"]
    # an empty generation: no people / points / metadata chunks parse to empty data; a palette needs its count
    assert [decode_sequences(tokenizer, m, [[3]])[0]["data"] for m in ("human_poses", "sam_instance", "metadata")] == [[], [], {}]
    assert decode_sequences(tokenizer, "color_palette", [[3]])[0]["error"].startswith("color_palette: ")


@pytest.mark.parametrize("tokenizer_file, samples", _raw_sample_sets())
def test_bad_structured_inputs_are_refused_clearly(tokenizer_file, samples):
    processor = _processor(tokenizer_file)
    bins = processor.tokenizer.coord_bins
    person = parse_serialized("human_poses", next(_text_of(s["human_poses"]) for s in samples if "human_poses" in s),
                              id_split=id_split_for(processor.tokenizer))[0]
    cases = [
        (dict(color_palette=ColorPalette([(bins, 0, 0)])), rf"'v0={bins}' is outside the text tokenizer's {bins} coordinate bins"),
        (dict(color_palette=[(1, 2)]), r"an \(r, g, b\) triple"),
        (dict(color_palette=ColorPalette([(1, 2, 3)] * 8)), "exceed max_length=23"),
        (dict(color_palette="v1=2 v0=1 v0=2 v0=3"), "ends where"),
        (dict(metadata={"brightness": 3}), r"key 'brightness' must be an integer key id"),
        (dict(metadata={1: 2.5}), r"metadata\[1\]: expected an integer bin"),
        (dict(metadata=[{1: 2}, "v1=1"]), "ends where"),
        (dict(human_poses=[{"box": (1, 2, 3, 4)}]), "needs the HumanPose fields"),
        (dict(human_poses=[HumanPose(person.box, person.global_orientation, person.pose_ids[:3], person.camera, person.shape)]),
         "'pose' has 8 values"),
        (dict(sam_instance=[{"point": (1, 2), "masks": [{"box": (0, 0, 1, 1)}]}]), "a mask is a SamMask or a dict"),
        (dict(sam_instance=[SamPoint((1, 2)), 7]), "expected SamPoint entries"),
        (dict(images=[np.zeros((8, 8, 3), np.uint8)] * 2, metadata={1: 2}), "different batch sizes"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            processor(**arguments)
    with pytest.raises(ValueError, match="not a text-serialised 4M-21 modality"):
        to_text("caption", "a cat")
    # nobody in the image: the reference's "none", which decodes back to no people
    ids = processor(human_poses=[])["human_poses"]
    assert processor.tokenizer.decode(ids[0][:-1]) == "none"
    assert processor.decode({"human_poses": ids})["human_poses"][0]["data"] == []


def test_a_tokenizer_without_the_serialisation_keywords_is_refused():
    """A vocabulary with the 4M layout but no ``human`` / ``pose`` / ... words cannot write poses: an error,
    not [UNK]s; palettes, written in coordinate tokens only, still encode."""
    vocab = {token: index for index, token in enumerate(
        ["[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_1]"] + [f"v{axis}={b}" for axis in range(4) for b in range(8)]
        + ["a", "cat"])}
    processor = FourMProcessor(FourMImageProcessor(image_size=224), FourMTextTokenizer(vocab=vocab))
    person = HumanPose((1, 2, 3, 4), [0] * 9, [1] * 8, [2] * 3, [3] * 10)
    with pytest.raises(ValueError, match=r"human_poses: the text tokenizer has no token for \['human', 'global'"):
        processor(human_poses=[person])
    ids = processor(color_palette=ColorPalette([(1, 2, 3)]))["color_palette"]
    assert processor.decode({"color_palette": ids})["color_palette"][0]["data"] == ColorPalette([(1, 2, 3)])


# ---- the pipeline on the assembled 4M-21 fixture ---------------------------------------------------------
SEQUENCE_TRUNKS = sorted(name for name, trunk in TRUNKS.items()
                         if any(trunk.modalities.get(m, {}).get("decoder") for m in SEQUENCE_MODALITIES))


@pytest.fixture(scope="module", params=SEQUENCE_TRUNKS or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"no fixture trunk with 4M-21 sequence outputs under {ML4M}"))])
def assembled(request, tmp_path_factory):
    """(trunk, the assembled folder's pipeline): the reference checkpoint and its text tokenizer, no image tokenizer."""
    from transformers import pipeline

    from fourm_hf.ml4m.assembly import assemble_ml4m

    trunk = TRUNKS[request.param]
    out = tmp_path_factory.mktemp("assembled") / trunk.name
    summary = assemble_ml4m(trunk.model, [], text_tokenizer_for(trunk), out, config=trunk.config,
                            allow_missing_tokenizers=True)
    outputs = [m for m in SEQUENCE_MODALITIES if trunk.modalities.get(m, {}).get("decoder")]
    assert all(m in summary["targets"] for m in outputs), summary["targets"]
    return trunk, outputs, pipeline("any-to-any", model=str(out))


STRUCTURE = {"metadata": dict, "color_palette": ColorPalette, "human_poses": list, "sam_instance": list}


def test_the_pipeline_generates_every_sequence_output_from_rgb(assembled):
    trunk, outputs, pipe = assembled
    config, tokenizer = pipe.model.config, pipe.processor.tokenizer
    assert [name for name in pipe.available_targets() if name in SEQUENCE_MODALITIES] == \
        [name for name in ("human_poses", "sam_instance", "color_palette", "metadata") if name in outputs]
    image = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
    for name in outputs:
        for options in ({"seed": 0}, {"greedy": True}):
            out = pipe(image, target_modalities=[name], return_tokens=True, **options)
            value, ids = out[name], out["tokens"][name]
            assert set(out) == {name, "tokens"} and set(value) == {"text", "data", "error"}
            assert 0 < len(ids) <= config.modality(name).max_length and ids.dtype == np.int64
            assert value["text"] == tokenizer.decode_text(ids.tolist())
            if value["error"] is None:  # parsed: the structure writes back to the generated text
                assert isinstance(value["data"], STRUCTURE[name])
                assert to_text(name, value["data"], id_split_for(tokenizer)).split() == value["text"].split()
            else:
                assert value["data"] is None and value["error"].startswith(f"{name}: ")
        grid = make_grid(image, out, tile_size=224)  # the input image as a tile, the generated text under it
        assert grid.size[0] == grid_size(1, 224)[0] and grid.size[1] > grid_size(1, 224)[1]


def test_the_pipeline_conditions_on_sequence_inputs(assembled):
    trunk, outputs, pipe = assembled
    inputs = [m for m in SEQUENCE_MODALITIES if trunk.modalities.get(m, {}).get("encoder")]
    samples = [s for s in trunk.table["raw_samples"] if all(m in s for m in inputs)]
    assert inputs and samples, f"{trunk.name}: no raw sample with every sequence input {inputs}"
    id_split = id_split_for(pipe.processor.tokenizer)
    given = {m: parse_serialized(m, _text_of(samples[0][m]), id_split=id_split) for m in inputs}
    image = (np.random.default_rng(1).random((224, 224, 3)) * 255).astype(np.uint8)
    out = pipe({"rgb": image, **given}, target_modalities=["caption"], greedy=True, return_tokens=True)
    assert isinstance(out["caption"], str)
    for name, data in given.items():  # the processor's ids of the given structure reached the model
        expected = pipe.processor(**{name: data})[name][0].numpy()
        assert np.array_equal(out["tokens"][name], expected), name
    unconditioned = pipe(image, target_modalities=["caption"], greedy=True, return_tokens=True)
    assert not set(inputs) & set(unconditioned["tokens"])
    with pytest.raises(ValueError, match="is both an input and a target"):
        pipe({"rgb": image, inputs[0]: given[inputs[0]]}, target_modalities=[inputs[0]])


def test_decoder_positions_restart_at_the_modality_decoder_length(assembled):
    """Decoder positions from ``decoder_max_length`` on embed as position 0 (the reference clamps
    human_poses at 263 although it may have 275 tokens); below the limit they differ."""
    trunk, outputs, pipe = assembled
    model, config = pipe.model, pipe.model.config
    for name in outputs:
        spec = config.modality(name)
        limit = spec.decoder_position_limit
        positions = torch.tensor([[0, limit - 1, limit, spec.max_length - 1]])
        modality_ids = torch.full_like(positions, config.modality_id(name))
        with torch.no_grad():
            _, placement = model.decoder_embeddings(torch.full_like(positions, 5), modality_ids, positions,
                                                    torch.ones_like(positions), model.mask_token,
                                                    model.encoder_modality_embeddings())
        assert not torch.equal(placement[0, 0], placement[0, 1]), name
        if limit < spec.max_length:
            assert torch.equal(placement[0, 2], placement[0, 0]) and torch.equal(placement[0, 3], placement[0, 0]), name
