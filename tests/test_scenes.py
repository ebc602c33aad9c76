"""The embedded scene corpus: exact, self-consistent labels and a resumable dataset writer."""

import re
from pathlib import Path

import numpy as np
import pytest

from fourm_hf import cli
from fourm_hf.data import scenes
from fourm_hf.data.scenes import dataset as scene_dataset
from fourm_hf.data.scenes import raytrace
from fourm_hf.data.scenes import (
    FIELD_OF_VIEW_DEGREES,
    MIN_VISIBLE_FRACTION,
    SCENE_CLASSES,
    SHAPES,
    SKY_DEPTH,
    SKY_NORMAL,
    make_scene_dataset,
    render_scene,
    sample_scene,
    scene_features,
    scene_seed,
)

SEEDS = range(6)
OBJECT_PATTERN = re.compile(r"\b(?:a|the) (?:(?:small|large) )?(\w+) (sphere|cube|cylinder|cone)\b")


@pytest.fixture(scope="module")
def rendered():
    return {seed: render_scene(seed, 64) for seed in SEEDS}


def test_render_is_deterministic_per_seed_and_seeds_differ():
    first, again, other = render_scene(3, 32), render_scene(3, 32), render_scene(4, 32)
    for key in ("rgb", "depth", "normal", "semseg", "instances"):
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert first["boxes"] == again["boxes"] and first["caption"] == again["caption"]
    assert not np.array_equal(first["rgb"], other["rgb"])
    assert first["caption"] != other["caption"] or first["boxes"] != other["boxes"]


def test_same_scene_at_every_resolution():
    small, large = render_scene(5, 32), render_scene(5, 64)
    assert small["caption"] == large["caption"]
    assert [b["label"] for b in small["boxes"]] == [b["label"] for b in large["boxes"]]
    for box_small, box_large in zip(small["boxes"], large["boxes"]):
        np.testing.assert_allclose(box_small["box"], box_large["box"], atol=2.5 / 32)


def test_label_types_and_sky_constants(rendered):
    assert sum((scene["semseg"] == 0).any() for scene in rendered.values()) >= 3  # most views show sky
    for seed, scene in rendered.items():
        assert scene["rgb"].dtype == np.uint8 and scene["rgb"].shape == (64, 64, 3)
        assert scene["depth"].dtype == np.float32 and scene["depth"].shape == (64, 64)
        assert scene["normal"].dtype == np.float32 and scene["normal"].shape == (64, 64, 3)
        assert scene["semseg"].dtype == np.uint8 and scene["semseg"].max() < len(SCENE_CLASSES)
        sky = scene["semseg"] == 0
        assert (~sky).any(), seed
        np.testing.assert_array_equal(sky, scene["depth"] == SKY_DEPTH)
        np.testing.assert_array_equal(scene["normal"][sky], np.broadcast_to(SKY_NORMAL, (sky.sum(), 3)))
        assert np.all((scene["depth"][~sky] > 0.1) & (scene["depth"][~sky] < SKY_DEPTH))
        np.testing.assert_allclose(np.linalg.norm(scene["normal"], axis=-1), 1.0, atol=1e-5)
        # visible surfaces face the camera: normal . viewing ray <= 0 (the camera looks along +z)
        assert np.all(np.sum(scene["normal"] * _pixel_rays(64), axis=-1)[~sky] < 1e-4), seed


def _pixel_rays(size: int) -> np.ndarray:
    """(size, size, 3) camera-frame rays through pixel centres, z = 1."""
    focal = (size / 2.0) / np.tan(np.radians(FIELD_OF_VIEW_DEGREES) / 2.0)
    coords = (np.arange(size) + 0.5 - size / 2.0) / focal
    u, v = np.meshgrid(coords, coords)
    return np.stack([u, v, np.ones_like(u)], axis=-1)


def _normals_from_depth(depth: np.ndarray) -> np.ndarray:
    """Central-difference normals of the back-projected depth map, (H-2, W-2, 3), facing the camera."""
    points = _pixel_rays(depth.shape[0]) * depth[..., None].astype(np.float64)
    along_x = points[1:-1, 2:] - points[1:-1, :-2]
    along_y = points[2:, 1:-1] - points[:-2, 1:-1]
    normals = np.cross(along_x, along_y)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    facing_away = np.sum(normals * points[1:-1, 1:-1], axis=-1) > 0
    normals[facing_away] *= -1
    return normals


def test_normals_from_depth_agree_with_rendered_normals_on_flat_surfaces(rendered):
    errors, object_errors = [], []
    for scene in rendered.values():
        normal, semseg = scene["normal"].astype(np.float64), scene["semseg"]
        center = normal[1:-1, 1:-1]
        flat = semseg[1:-1, 1:-1] != 0
        for shifted in (normal[:-2, 1:-1], normal[2:, 1:-1], normal[1:-1, :-2], normal[1:-1, 2:]):
            flat &= np.sum(center * shifted, axis=-1) > np.cos(np.radians(0.05))
        for shifted in (semseg[:-2, 1:-1], semseg[2:, 1:-1], semseg[1:-1, :-2], semseg[1:-1, 2:]):
            flat &= shifted == semseg[1:-1, 1:-1]
        estimated = _normals_from_depth(scene["depth"])
        cosine = np.clip(np.sum(estimated * center, axis=-1), -1.0, 1.0)
        errors.append(np.degrees(np.arccos(cosine[flat])))
        object_errors.append(np.degrees(np.arccos(cosine[flat & (semseg[1:-1, 1:-1] >= 2)])))
    errors, object_errors = np.concatenate(errors), np.concatenate(object_errors)
    assert errors.size > 5000 and object_errors.size > 100  # floor, cube faces, cylinder tops
    assert np.median(errors) < 0.5 and np.median(object_errors) < 0.5
    assert np.percentile(errors, 99) < 3.0


def test_normals_from_depth_agree_on_curved_object_interiors(rendered):
    errors = []
    for scene in rendered.values():
        instances = scene["instances"]
        interior = instances[1:-1, 1:-1] > 0
        for shifted in (instances[:-2, 1:-1], instances[2:, 1:-1], instances[1:-1, :-2], instances[1:-1, 2:]):
            interior &= shifted == instances[1:-1, 1:-1]
        estimated = _normals_from_depth(scene["depth"])
        cosine = np.clip(np.sum(estimated * scene["normal"][1:-1, 1:-1], axis=-1), -1.0, 1.0)
        errors.append(np.degrees(np.arccos(cosine[interior])))
    errors = np.concatenate(errors)
    assert errors.size > 300
    assert np.median(errors) < 3.0


def test_boxes_enclose_exactly_the_instance_pixels(rendered):
    for seed, scene in rendered.items():
        instances = scene["instances"]
        assert instances.max() == len(scene["boxes"]), seed
        for index, entry in enumerate(scene["boxes"]):
            xmin, ymin, xmax, ymax = (round(v * 64) for v in entry["box"])
            np.testing.assert_allclose(np.array(entry["box"]) * 64, [xmin, ymin, xmax, ymax], atol=1e-6)
            mask = instances == index + 1
            window = mask[ymin:ymax, xmin:xmax]
            assert window.sum() == mask.sum(), (seed, entry)  # nothing outside the box
            # every edge row / column of the box holds a pixel of the object: the box is tight
            assert window[0].any() and window[-1].any() and window[:, 0].any() and window[:, -1].any(), (seed, entry)


def test_objects_are_large_enough_and_inside_the_frame(rendered):
    for seed, scene in rendered.items():
        counts = np.bincount(scene["instances"].ravel(), minlength=len(scene["boxes"]) + 1)[1:]
        assert np.all(counts >= MIN_VISIBLE_FRACTION * 64 * 64), (seed, counts)
        border = np.concatenate([scene["instances"][[0, -1]].ravel(), scene["instances"][:, [0, -1]].ravel()])
        assert not border.any(), seed


def test_semseg_matches_instances(rendered):
    for seed, scene in rendered.items():
        background = scene["instances"] == 0
        assert set(np.unique(scene["semseg"][background])) <= {0, 1}
        for index, entry in enumerate(scene["boxes"]):
            shape = entry["label"].split()[-1]
            values = np.unique(scene["semseg"][scene["instances"] == index + 1])
            assert list(values) == [SCENE_CLASSES.index(shape)], (seed, entry["label"], values)


def test_caption_names_exactly_the_boxed_objects(rendered):
    for seed, scene in rendered.items():
        labels = [entry["label"] for entry in scene["boxes"]]
        assert len(set(labels)) == len(labels), seed
        mentioned = {f"{color} {shape}" for color, shape in OBJECT_PATTERN.findall(scene["caption"])}
        assert mentioned == set(labels), (seed, scene["caption"], labels)
        assert scene["caption"].count(".") == len(labels)


def test_caption_relations_match_the_camera_view():
    checked = 0
    for seed in range(12):
        scene = sample_scene(seed)
        by_label = {obj.label: obj for obj in scene.objects}
        caption = render_scene(seed, 32)["caption"]
        for sentence in caption.split(". ")[1:]:
            relation = re.search(r"(to the left of|to the right of|in front of|behind) the (\w+ \w+)", sentence).groups()
            subject = OBJECT_PATTERN.search(sentence).groups()
            obj, reference = by_label[" ".join(subject)], by_label[relation[1]]
            centers = scene.camera.world_to_camera(np.array([[o.x, o.y, o.height / 2] for o in (obj, reference)]))
            image_x = centers[:, 0] / centers[:, 2]
            if relation[0] == "to the left of":
                assert image_x[0] < image_x[1], (seed, sentence)
            elif relation[0] == "to the right of":
                assert image_x[0] > image_x[1], (seed, sentence)
            elif relation[0] == "behind":
                assert centers[0, 2] > centers[1, 2], (seed, sentence)
            else:
                assert centers[0, 2] < centers[1, 2], (seed, sentence)
            checked += 1
    assert checked >= 10


def _assert_same_dataset(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        np.testing.assert_array_equal(np.asarray(a["rgb"]), np.asarray(b["rgb"]))
        for key in ("depth", "normal", "semseg"):
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
        assert (a["boxes"], a["caption"], a["seed"]) == (b["boxes"], b["caption"], b["seed"])


def test_make_scenes_cli_writes_a_loadable_dataset(tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "scenes"
    assert cli.main(["make-scenes", "--num", "5", "--size", "32", "--out", str(out), "--shard-size", "2"]) == 0
    dataset = load_from_disk(str(out))
    assert dataset.features == scene_features(32)
    assert len(dataset) == 5 and not (tmp_path / "scenes.shards").exists()
    assert len(set(dataset["seed"])) == 5
    row = dataset[3]
    expected = render_scene(scene_seed(0, 3), 32)
    assert row["seed"] == scene_seed(0, 3)
    assert row["rgb"].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(row["rgb"]), expected["rgb"])
    np.testing.assert_array_equal(np.asarray(row["depth"], dtype=np.float32), expected["depth"])
    np.testing.assert_array_equal(np.asarray(row["normal"], dtype=np.float32), expected["normal"])
    np.testing.assert_array_equal(np.asarray(row["semseg"], dtype=np.uint8), expected["semseg"])
    assert row["caption"] == expected["caption"]
    assert [b["label"] for b in row["boxes"]] == [b["label"] for b in expected["boxes"]]
    np.testing.assert_allclose([b["box"] for b in row["boxes"]], [b["box"] for b in expected["boxes"]], atol=1e-7)
    # a rerun with the same arguments finds the finished dataset and leaves it alone
    assert cli.main(["make-scenes", "--num", "5", "--size", "32", "--out", str(out), "--shard-size", "2"]) == 0


def test_kill_and_resume_gives_the_uninterrupted_dataset(tmp_path, monkeypatch):
    reference = make_scene_dataset(7, 32, tmp_path / "reference", seed=1, shard_size=2)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        make_scene_dataset(7, 32, out, seed=1, shard_size=2, _stop_after_shards=2)
    shards_dir = tmp_path / "resumed.shards"
    assert not out.exists()
    assert sorted(p.name for p in shards_dir.glob("shard-*")) == ["shard-00000-of-00004", "shard-00001-of-00004"]
    # a kill in the middle of writing a shard leaves a temporary directory behind
    (shards_dir / "shard-00002-of-00004.tmp-99999").mkdir()
    (shards_dir / "shard-00002-of-00004.tmp-99999" / "junk").write_text("half written")

    rendered_seeds = []
    original_row = scene_dataset._scene_row
    monkeypatch.setattr(scene_dataset, "_scene_row", lambda seed, size: rendered_seeds.append(seed) or original_row(seed, size))
    resumed = make_scene_dataset(7, 32, out, seed=1, shard_size=2)
    assert rendered_seeds == [scene_seed(1, i) for i in range(4, 7)]  # finished shards are not redone
    assert not shards_dir.exists()
    _assert_same_dataset(resumed, reference)


def test_bad_arguments_raise_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="num must be an int >= 1"):
        make_scene_dataset(0, 32, tmp_path / "a")
    with pytest.raises(ValueError, match="multiple of 8"):
        make_scene_dataset(2, 60, tmp_path / "a")
    with pytest.raises(ValueError, match="at least 32"):
        render_scene(0, 24)
    with pytest.raises(TypeError, match="must be an int"):
        render_scene(0, 64.0)
    with pytest.raises(ValueError, match="num_proc must be an int >= 1"):
        make_scene_dataset(2, 32, tmp_path / "a", num_proc=0)

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds something other than a scene dataset"):
        make_scene_dataset(2, 32, occupied)
    assert (occupied / "notes.txt").read_text() == "mine"

    make_scene_dataset(2, 32, tmp_path / "done", shard_size=1)
    with pytest.raises(ValueError, match="holds a scene dataset made with"):
        make_scene_dataset(3, 32, tmp_path / "done")

    with pytest.raises(KeyboardInterrupt):
        make_scene_dataset(4, 32, tmp_path / "partial", shard_size=2, _stop_after_shards=1)
    with pytest.raises(ValueError, match="unfinished run"):
        make_scene_dataset(4, 32, tmp_path / "partial", shard_size=3)

    assert cli.main(["make-scenes", "--num", "-3", "--out", str(tmp_path / "b")]) == 2
    assert "num must be an int >= 1" in capsys.readouterr().err
    assert not Path(tmp_path / "b").exists()


def test_intersections_and_shadows_match_the_geometry():
    light_from_above = np.array([0.0, 0.0, 1.0])
    for shape in SHAPES:
        obj = scenes.SceneObject(shape=shape, color="red", size="large", x=1.0, y=-2.0, radius=0.5, height=1.2 if shape in ("cylinder", "cone") else 1.0, angle=0.3)
        # a ray straight down through the axis hits the top of the object
        origins = np.array([[1.0, -2.0, 5.0], [1.0 + 0.25, -2.0, 5.0], [4.0, 4.0, 5.0]])
        dirs = np.array([[0.0, 0.0, -1.0]] * 3)
        t, normals = raytrace._intersect_object(obj, origins, dirs)
        assert t[0] == pytest.approx(5.0 - obj.height), shape
        assert np.isinf(t[2]), shape  # far away: miss
        if shape == "cone":  # halfway out from the axis the side is at half the height
            assert t[1] == pytest.approx(5.0 - obj.height / 2.0), shape
            expected = np.array([obj.height, 0.0, obj.radius]) / np.hypot(obj.height, obj.radius)
            np.testing.assert_allclose(normals[1], expected, atol=1e-9)
        elif shape == "sphere":
            assert t[1] == pytest.approx(5.0 - (0.5 + np.sqrt(0.5**2 - 0.25**2))), shape
        else:
            assert t[1] == pytest.approx(5.0 - obj.height), shape
            np.testing.assert_allclose(normals[1], [0.0, 0.0, 1.0], atol=1e-9)
        scene = scenes.Scene(objects=[obj], camera=sample_scene(0).camera, light=light_from_above)
        shadowed = raytrace._in_shadow(scene, np.array([[1.0, -2.0, 1e-3], [3.0, -2.0, 1e-3]]))
        assert shadowed.tolist() == [True, False], shape
