"""``human_poses``: SMPL parameters per person, brought by the user (no faithful labeller exists in the HF stack).

4M-21 labelled people with 4D-Humans (HMR 2.0): a person detector, then a ViT that regresses the parameters of
the SMPL body model. The released pose tokenizer reads exactly those SMPL parameters. transformers has no SMPL
regressor (its pose models, e.g. VitPose, give 2D keypoints, from which SMPL rotations cannot be recovered
faithfully), and SMPL's model files may not be redistributed under their licence. So
``human_poses_model_unavailable`` is a clear error, and the way in is the input dataset: a ``human_poses``
column in the contract's format, validated and passed through by ``HumanPosesFromInput``.

Format (one list per image, one dict per person; rotations are row-major flattened 3 x 3 matrices):
``box`` 4 floats (xmin, ymin, xmax, ymax) in [0, 1] of the image size; ``global_orientation`` 9 (the root
rotation); ``body_pose`` 207 = 23 rotations; ``camera`` 3 (HMR 2.0's weak-perspective camera); ``shape`` 10
(SMPL betas). Every rotation must be orthonormal with determinant +1 (within ``ROTATION_TOLERANCE``).
"""

from __future__ import annotations

import numpy as np

from ..base import Labeller

HUMAN_POSE_FIELDS = {"box": 4, "global_orientation": 9, "body_pose": 207, "camera": 3, "shape": 10}
ROTATION_TOLERANCE = 1e-3


def human_poses_model_unavailable(model_id: str) -> ValueError:
    """The error for ``--human-poses-model``: what is missing and what to do instead."""
    return ValueError(
        f"human_poses: cannot label poses with {model_id!r}: 4M-21's human_poses are SMPL body-model parameters "
        "regressed by 4D-Humans (HMR 2.0); transformers provides no SMPL regressor, and the SMPL model files it needs "
        "may not be redistributed under their licence. Instead, run 4D-Humans yourself and add a 'human_poses' column "
        "to the input dataset (format: docs/pseudo-labeling-4m21.md, section human_poses), then pass "
        "--human-poses-from-input to validate it and carry it through"
    )


def human_poses_feature():
    """The ``datasets`` feature of the ``human_poses`` column."""
    from datasets import List, Value

    return List({name: List(Value("float32"), length=count) for name, count in HUMAN_POSE_FIELDS.items()})


def _check_rotations(values: np.ndarray, where: str) -> None:
    matrices = values.reshape(-1, 3, 3)
    products = matrices @ matrices.transpose(0, 2, 1)
    error = np.abs(products - np.eye(3)).max()
    if error > ROTATION_TOLERANCE or np.any(np.linalg.det(matrices) < 0):
        raise ValueError(f"{where}: expected rotation matrices (orthonormal, determinant +1), off by {error:.3g}")


def validate_human_poses(people, source: str) -> list[dict]:
    """One image's ``human_poses`` value -> the same people as float32 lists; ValueError naming image and field."""
    if not isinstance(people, (list, tuple)):
        raise ValueError(f"human_poses of image {source!r}: expected a list of people (dicts), got {type(people).__name__}")
    checked = []
    for index, person in enumerate(people):
        where = f"human_poses of image {source!r}, person {index}"
        if not isinstance(person, dict) or set(person) != set(HUMAN_POSE_FIELDS):
            got = sorted(person) if isinstance(person, dict) else type(person).__name__
            raise ValueError(f"{where}: expected a dict with fields {sorted(HUMAN_POSE_FIELDS)}, got {got}")
        values = {}
        for name, count in HUMAN_POSE_FIELDS.items():
            try:
                array = np.asarray(person[name], dtype=np.float32)
            except (TypeError, ValueError):
                array = np.zeros(0)
            if array.shape != (count,) or not np.all(np.isfinite(array)):
                raise ValueError(f"{where}: field {name!r} must be {count} finite numbers, got {person[name]!r:.80}")
            values[name] = array
        box = values["box"]
        if box.min() < 0 or box.max() > 1 or box[0] > box[2] or box[1] > box[3]:
            raise ValueError(f"{where}: field 'box' must be (xmin, ymin, xmax, ymax) in [0, 1] with min <= max, got {box.tolist()}")
        _check_rotations(values["global_orientation"], f"{where}: field 'global_orientation'")
        _check_rotations(values["body_pose"], f"{where}: field 'body_pose'")
        checked.append({name: array.tolist() for name, array in values.items()})
    return checked


class HumanPosesFromInput(Labeller):
    """Validates the input dataset's ``human_poses`` column and writes it in the contract's format."""

    columns = ("human_poses",)
    input_columns = ("human_poses",)  # read from the input dataset; writing it back needs no --replace-existing

    def features(self, size):
        return {"human_poses": human_poses_feature()}

    def label(self, images, labels):
        if "human_poses" not in labels:
            raise ValueError("human_poses: --human-poses-from-input needs an input dataset with a 'human_poses' column")
        sources = labels.get("_sources") or [str(k) for k in range(len(images))]
        return {"human_poses": [validate_human_poses(people, source) for people, source in zip(labels["human_poses"], sources)]}

    def metadata(self):
        return {"source": "the input dataset's human_poses column (validated)", "fields": HUMAN_POSE_FIELDS}
