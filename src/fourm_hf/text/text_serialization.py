"""The text serialisations of 4M-21's structured modalities, both ways, in the reference's formats.

4M-21 writes four modalities as text for the WordPiece tokenizer, with the coordinate-like tokens
``v0=i``, ``v1=i``, ``v2=i``, ``v3=i`` and a few keywords. What they describe cannot be drawn as
one image, so parsing returns structured data (dataclasses, dicts):

* metadata: chunks ``v1=<key id> v0=<value>``, one per key (span-masked chunk-wise when training);
  :func:`serialize_metadata` / :func:`parse_metadata`. Key ids index a key list the caller gives
  (the order of the keys the metadata was computed with).
* colour palette: ``v1=<number of colours>`` then ``v0=r v0=g v0=b`` per colour;
  :class:`ColorPalette`.
* human poses: per person ``human v0=xmin v1=ymin v2=xmax v3=ymax`` then four sections in any order
  (the reference shuffles them): ``global`` (9 values: the binned 3x3 global orientation), ``pose``
  (8 token ids of the human-pose tokenizer), ``camera`` (3 values), ``shape`` (10 values: SMPL
  betas); the reference ends the string with a space. :class:`HumanPose`.
* SAM instances: per query point ``point v0=x v1=y`` then ``none`` or one or more masks
  ``polygon v0=xmin v1=ymin v2=xmax v3=ymax`` + 16 token ids of the SAM-instance tokenizer.
  :class:`SamPoint`, :class:`SamMask`.

Token ids of the pose and SAM tokenizers are written ``v0=k`` when ``k < id_split`` and
``v1=(k - id_split)`` otherwise (``id_split`` 512 for the released 1k-entry codebooks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ID_SPLIT = 512
POSE_SECTIONS = {"global": 9, "pose": 8, "camera": 3, "shape": 10}  # section -> number of values
SAM_MASK_TOKENS = 16
NO_HUMANS = "none"  # the reference's human_poses text for an image without people


# ---- single tokens --------------------------------------------------------------------------------
def coordinate(level: int, value: int) -> str:
    """(level, value) -> ``"v<level>=<value>"``."""
    if level not in (0, 1, 2, 3) or not isinstance(value, int) or value < 0:
        raise ValueError(f"A coordinate token needs level 0..3 and an integer value >= 0, got level {level}, value {value!r}.")
    return f"v{level}={value}"


def parse_coordinate(token: str, level: int | None = None) -> tuple[int, int]:
    """``"v1=17"`` -> (1, 17); with ``level`` given, any other level is an error."""
    prefix, _, value = token.partition("=")
    if len(prefix) != 2 or prefix[0] != "v" or prefix[1] not in "0123" or not value.isdigit():
        raise ValueError(f"Expected a coordinate token 'v0=..'..'v3=..', got {token!r}.")
    parsed = (int(prefix[1]), int(value))
    if level is not None and parsed[0] != level:
        raise ValueError(f"Expected a 'v{level}=' token, got {token!r}.")
    return parsed


def encode_token_id(token_id: int, id_split: int = ID_SPLIT) -> str:
    """A tokenizer id as text: ``v0=k`` below ``id_split``, else ``v1=(k - id_split)``."""
    if not isinstance(token_id, int) or not 0 <= token_id < 2 * id_split:
        raise ValueError(f"A token id must be an integer in [0, {2 * id_split}), got {token_id!r}.")
    return coordinate(0, token_id) if token_id < id_split else coordinate(1, token_id - id_split)


def decode_token_id(token: str, id_split: int = ID_SPLIT) -> int:
    level, value = parse_coordinate(token)
    if level not in (0, 1):
        raise ValueError(f"A token id is written 'v0=k' or 'v1=k', got {token!r}.")
    return value + level * id_split


class _Reader:
    """Whitespace tokens of one serialisation, read left to right with clear errors."""

    def __init__(self, text: str, what: str):
        if not isinstance(text, str):
            raise TypeError(f"{what} must be a string, got {type(text).__name__}.")
        self.tokens, self.index, self.what = text.split(), 0, what

    def done(self) -> bool:
        return self.index >= len(self.tokens)

    def peek(self) -> str | None:
        return None if self.done() else self.tokens[self.index]

    def take(self, expected: str = "a token") -> str:
        if self.done():
            raise ValueError(f"{self.what}: the text ends where {expected} was expected.")
        self.index += 1
        return self.tokens[self.index - 1]

    def keyword(self, *allowed: str) -> str:
        token = self.take(f"one of {allowed}")
        if token not in allowed:
            raise ValueError(f"{self.what}: expected one of {allowed} at token {self.index - 1}, got {token!r}.")
        return token

    def values(self, count: int, level: int | None = 0) -> list[int]:
        return [parse_coordinate(self.take(f"a 'v{level}=' value"), level)[1] for _ in range(count)]

    def box(self) -> tuple[int, int, int, int]:
        return tuple(parse_coordinate(self.take("a box coordinate"), level)[1] for level in range(4))

    def ids(self, count: int, id_split: int) -> list[int]:
        return [decode_token_id(self.take("a token id"), id_split) for _ in range(count)]


# ---- metadata -------------------------------------------------------------------------------------
METADATA_KEYS = (
    "original_width", "original_height", "caption_n_chars", "caption_n_words", "caption_n_sentences", "n_humans",
    "n_sam_instances", "n_coco_instances", "coco_instance_diversity", "colorfulness", "brightness", "contrast",
    "saturation", "entropy", "walkability", "objectness", "semantic_diversity", "geometric_complexity",
    "occlusion_score", "watermark_score", "aesthetic_score",
)
"""The reference's metadata keys in key-id order: ``v1=k`` names ``METADATA_KEYS[k]`` (its explicit id map, so
that keys added later do not move existing ids). Pass it as ``metadata_keys=`` to use names instead of ids."""


def serialize_metadata(values: Mapping[str, int], keys: Sequence[str]) -> list[str]:
    """{key: binned value} -> chunks ``"v1=<index of key in keys> v0=<value>"`` in the order of ``values``."""
    chunks = []
    for key, value in values.items():
        if key not in keys:
            raise ValueError(f"Metadata key {key!r} is not in the key list {list(keys)}.")
        chunks.append(f"{coordinate(1, list(keys).index(key))} {coordinate(0, value)}")
    return chunks


def parse_metadata(text: str | Sequence[str], keys: Sequence[str] | None = None) -> dict[str | int, int]:
    """Chunks (or their space-joined string) -> {key: value}; keys are names when ``keys`` is given, else ids."""
    reader = _Reader(text if isinstance(text, str) else " ".join(text), "metadata")
    parsed = {}
    while not reader.done():
        key_id = parse_coordinate(reader.take("a 'v1=' key"), 1)[1]
        value = parse_coordinate(reader.take("a 'v0=' value"), 0)[1]
        if keys is not None and key_id >= len(keys):
            raise ValueError(f"metadata: key id {key_id} is outside the key list of {len(keys)} keys.")
        parsed[keys[key_id] if keys is not None else key_id] = value
    return parsed


# ---- colour palette ---------------------------------------------------------------------------------
@dataclass
class ColorPalette:
    """Colours as binned (r, g, b) triples."""

    colors: list[tuple[int, int, int]]

    def serialize(self) -> str:
        parts = [coordinate(1, len(self.colors))]
        for color in self.colors:
            if len(color) != 3:
                raise ValueError(f"A palette colour has 3 channels, got {color!r}.")
            parts.extend(coordinate(0, channel) for channel in color)
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> "ColorPalette":
        reader = _Reader(text, "color_palette")
        count = parse_coordinate(reader.take("'v1=<number of colours>'"), 1)[1]
        colors = [tuple(reader.values(3)) for _ in range(count)]
        if not reader.done():
            raise ValueError(f"color_palette: {count} colours announced but more values follow ({reader.peek()!r}).")
        return cls(colors)


# ---- human poses -------------------------------------------------------------------------------------
@dataclass
class HumanPose:
    """One person: box, the four pose sections, and the order they were written in."""

    box: tuple[int, int, int, int]
    global_orientation: list[int]
    pose_ids: list[int]
    camera: list[int]
    shape: list[int]
    section_order: tuple[str, ...] = tuple(POSE_SECTIONS)

    def sections(self) -> dict[str, list[int]]:
        return {"global": self.global_orientation, "pose": self.pose_ids, "camera": self.camera, "shape": self.shape}


def serialize_human_poses(humans: Sequence[HumanPose], id_split: int = ID_SPLIT) -> str:
    """People -> ``"human <box> <section> <values> ... "`` (with the reference's trailing space); nobody ->
    ``"none"``, the reference's text for an image without people."""
    if not humans:
        return NO_HUMANS
    parts = []
    for human in humans:
        parts.append("human " + " ".join(coordinate(level, v) for level, v in enumerate(human.box)))
        sections = human.sections()
        if sorted(human.section_order) != sorted(POSE_SECTIONS):
            raise ValueError(f"section_order must order {sorted(POSE_SECTIONS)}, got {human.section_order}.")
        for name in human.section_order:
            values = sections[name]
            if len(values) != POSE_SECTIONS[name]:
                raise ValueError(f"human pose section {name!r} has {POSE_SECTIONS[name]} values, got {len(values)}.")
            tokens = [encode_token_id(v, id_split) if name == "pose" else coordinate(0, v) for v in values]
            parts.append(name + " " + " ".join(tokens))
    return "".join(part + " " for part in parts)


def parse_human_poses(text: str, id_split: int = ID_SPLIT) -> list[HumanPose]:
    """``serialize_human_poses``'s text -> people (``"none"`` -> no one)."""
    reader, humans = _Reader(text, "human_poses"), []
    if reader.tokens == [NO_HUMANS]:
        return []
    while not reader.done():
        reader.keyword("human")
        box, sections, order = reader.box(), {}, []
        while reader.peek() in POSE_SECTIONS and reader.peek() not in sections:
            name = reader.take()
            count = POSE_SECTIONS[name]
            sections[name] = reader.ids(count, id_split) if name == "pose" else reader.values(count)
            order.append(name)
        if len(sections) != len(POSE_SECTIONS):
            missing = sorted(set(POSE_SECTIONS) - set(sections))
            raise ValueError(f"human_poses: person {len(humans)} lacks the sections {missing} (next token {reader.peek()!r}).")
        humans.append(HumanPose(box, sections["global"], sections["pose"], sections["camera"], sections["shape"],
                                tuple(order)))
    return humans


# ---- SAM instances --------------------------------------------------------------------------------------
@dataclass
class SamMask:
    """One instance mask of a query point: its box and the SAM-instance tokenizer's 16 ids."""

    box: tuple[int, int, int, int]
    token_ids: list[int]


@dataclass
class SamPoint:
    """A query point and the masks found for it (none when empty)."""

    point: tuple[int, int]
    masks: list[SamMask] = field(default_factory=list)


def serialize_sam_instances(points: Sequence[SamPoint], id_split: int = ID_SPLIT) -> str:
    parts = []
    for entry in points:
        parts.append(f"point {coordinate(0, entry.point[0])} {coordinate(1, entry.point[1])}")
        if not entry.masks:
            parts.append("none")
        for mask in entry.masks:
            if len(mask.token_ids) != SAM_MASK_TOKENS:
                raise ValueError(f"A SAM instance mask has {SAM_MASK_TOKENS} token ids, got {len(mask.token_ids)}.")
            box = " ".join(coordinate(level, v) for level, v in enumerate(mask.box))
            parts.append(f"polygon {box} " + " ".join(encode_token_id(i, id_split) for i in mask.token_ids))
    return " ".join(parts)


def parse_sam_instances(text: str, id_split: int = ID_SPLIT) -> list[SamPoint]:
    reader, points = _Reader(text, "sam_instance"), []
    while not reader.done():
        reader.keyword("point")
        entry = SamPoint((parse_coordinate(reader.take(), 0)[1], parse_coordinate(reader.take(), 1)[1]))
        if reader.peek() == "none":
            reader.take()
        else:
            while reader.peek() == "polygon":
                reader.take()
                entry.masks.append(SamMask(reader.box(), reader.ids(SAM_MASK_TOKENS, id_split)))
            if not entry.masks:
                raise ValueError(f"sam_instance: point {len(points)} is followed by {reader.peek()!r}, not 'none' or 'polygon'.")
        points.append(entry)
    return points


# ---- by modality name --------------------------------------------------------------------------------------
def parse_serialized(modality: str, text: str | Sequence[str], *, id_split: int = ID_SPLIT, metadata_keys=None):
    """The structured data of a generated 4M-21 text modality (``metadata``, ``color_palette``, ...)."""
    parsers = {
        "metadata": lambda: parse_metadata(text, metadata_keys),
        "color_palette": lambda: ColorPalette.parse(text),
        "human_poses": lambda: parse_human_poses(text, id_split),
        "sam_instance": lambda: parse_sam_instances(text, id_split),
    }
    if modality not in parsers:
        raise ValueError(f"No text serialisation for modality {modality!r}; known: {sorted(parsers)}.")
    return parsers[modality]()
