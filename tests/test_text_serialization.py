"""4M-21 text serialisations (metadata, colour palette, human poses, SAM instances), both ways.

The reference's own strings (``raw_samples`` of every FM fixture JSON under $FOURM_ML4M_FIXTURES that
has them) must parse and serialise back to exactly the same text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fourm_hf.text.text_serialization import (
    ColorPalette,
    HumanPose,
    SamMask,
    SamPoint,
    decode_token_id,
    encode_token_id,
    parse_human_poses,
    parse_metadata,
    parse_sam_instances,
    parse_serialized,
    serialize_human_poses,
    serialize_metadata,
    serialize_sam_instances,
)

from conftest import SHARED_DIR

FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m"))
SERIALISED = ("metadata", "color_palette", "human_poses", "sam_instance")


def _raw_sample_params():
    params = []
    for meta_path in sorted(FIXTURE_DIR.glob("*/*.json")) if FIXTURE_DIR.is_dir() else []:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("raw_samples"), list):
            continue
        id_split = meta.get("text_tokenizer", {}).get("layout", {}).get("coord_bins", 512)
        for index, sample in enumerate(meta["raw_samples"]):
            for modality in SERIALISED:
                if modality in sample:
                    params.append(pytest.param(sample[modality], modality, id_split,
                                               id=f"{meta_path.parent.name}-{index}-{modality}"))
    return params or [pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"no FM fixture raw samples in {FIXTURE_DIR}"))]


@pytest.mark.parametrize("text, modality, id_split", _raw_sample_params())
def test_reference_strings_round_trip_exactly(text, modality, id_split):
    parsed = parse_serialized(modality, text, id_split=id_split)
    if modality == "metadata":
        assert serialize_metadata(parsed, keys=list(range(max(parsed) + 1))) == text
    elif modality == "color_palette":
        assert parsed.serialize() == text
    elif modality == "human_poses":
        assert serialize_human_poses(parsed, id_split) == text
    else:
        assert serialize_sam_instances(parsed, id_split) == text


def test_structured_values_read_back():
    keys = ["original_width", "brightness", "crowdedness"]
    chunks = serialize_metadata({"brightness": 7, "original_width": 400}, keys)
    assert chunks == ["v1=1 v0=7", "v1=0 v0=400"]
    assert parse_metadata(chunks, keys) == {"brightness": 7, "original_width": 400}
    assert parse_metadata(" ".join(chunks)) == {1: 7, 0: 400}

    palette = ColorPalette([(255, 0, 10), (3, 4, 5)])
    assert palette.serialize() == "v1=2 v0=255 v0=0 v0=10 v0=3 v0=4 v0=5"
    assert ColorPalette.parse(palette.serialize()) == palette

    person = HumanPose((1, 2, 30, 40), list(range(9)), [5, 511, 512, 1023, 0, 1, 2, 3], [7, 8, 9], list(range(10)),
                       section_order=("pose", "shape", "global", "camera"))
    text = serialize_human_poses([person])
    assert text.startswith("human v0=1 v1=2 v2=30 v3=40 pose v0=5 v0=511 v1=0 v1=511 ") and text.endswith(" ")
    assert parse_human_poses(text) == [person]

    points = [SamPoint((3, 4)), SamPoint((5, 6), [SamMask((1, 2, 3, 4), list(range(600, 616)))])]
    text = serialize_sam_instances(points)
    assert text.startswith("point v0=3 v1=4 none point v0=5 v1=6 polygon v0=1 v1=2 v2=3 v3=4 v1=88 ")
    assert parse_sam_instances(text) == points
    assert [decode_token_id(encode_token_id(k)) for k in (0, 511, 512, 1023)] == [0, 511, 512, 1023]


@pytest.mark.parametrize("call, message", [
    (lambda: ColorPalette.parse("v1=2 v0=1 v0=2 v0=3"), "ends where"),
    (lambda: ColorPalette.parse("v1=1 v0=1 v0=2 v0=3 v0=4"), "more values follow"),
    (lambda: parse_metadata("v0=1 v0=2"), "Expected a 'v1=' token"),
    (lambda: parse_metadata(["v1=5 v0=2"], keys=["a"]), "outside the key list"),
    (lambda: parse_human_poses("human v0=1 v1=2 v2=3 v3=4 global " + "v0=1 " * 9), "lacks the sections"),
    (lambda: parse_sam_instances("point v0=1 v1=2 polygon v0=1 v1=2 v2=3 v3=4 v0=1"), "ends where"),
    (lambda: parse_sam_instances("point v0=1 v1=2 human"), "not 'none' or 'polygon'"),
    (lambda: parse_serialized("caption", "a cat"), "No text serialisation"),
    (lambda: encode_token_id(1024), r"\[0, 1024\)"),
    (lambda: serialize_metadata({"nope": 1}, ["a"]), "not in the key list"),
    (lambda: serialize_sam_instances([SamPoint((1, 2), [SamMask((0, 0, 1, 1), [1, 2])])]), "16 token ids"),
    (lambda: parse_human_poses(3), "must be a string"),
])
def test_malformed_input_gets_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_no_people_is_the_references_none_both_ways():
    from fourm_hf.text.text_serialization import parse_human_poses, serialize_human_poses

    assert serialize_human_poses([]) == "none"
    assert parse_human_poses("none") == [] and parse_human_poses("none ") == []
