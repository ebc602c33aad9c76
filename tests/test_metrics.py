"""Metrics against hand-computed values, edge cases and bad input."""

import json
import math

import numpy as np
import pytest

from fourm_hf.training.metrics import (
    CaptionBLEU,
    CaptionObjectF1,
    DepthMetric,
    DetectionMAP,
    SegmentationMetric,
    SurfaceNormalMetric,
)

# ------------------------------------------------------------------ depth


def test_depth_hand_computed_values():
    prediction = np.array([[1.0, 2.0], [3.0, 4.0]])
    reference = np.array([[1.0, 2.5], [0.0, 5.0]])  # the 0 pixel is invalid
    result = DepthMetric(keep_in_memory=True).compute(predictions=[prediction], references=[reference])
    # valid pairs (1,1) (2,2.5) (4,5): rel errors 0, 0.2, 0.2; squared 0, 0.25, 1; ratios 1, 1.25, 1.25
    assert result["num_pixels"] == 3
    assert result["abs_rel"] == pytest.approx(0.4 / 3)
    assert result["rmse"] == pytest.approx(math.sqrt(1.25 / 3))
    assert result["delta1"] == pytest.approx(1 / 3)  # 1.25 is not < 1.25
    assert result["delta2"] == pytest.approx(1.0)
    assert result["delta3"] == pytest.approx(1.0)


def test_depth_valid_mask_and_batches_accumulate():
    metric = DepthMetric()  # default on-disk cache: add_batch then compute
    metric.add_batch(predictions=[np.full((2, 2), 2.0)], references=[np.full((2, 2), 1.0)])
    mask = np.array([[True, False], [False, False]])
    metric.add(prediction=np.full((1, 2, 2), 3.0), reference=np.full((2, 2), 1.0), valid_masks=mask)
    result = metric.compute()
    # 4 pixels with rel error 1 and one masked-in pixel with rel error 2
    assert result["num_pixels"] == 5
    assert result["abs_rel"] == pytest.approx((4 * 1.0 + 2.0) / 5)
    assert result["rmse"] == pytest.approx(math.sqrt((4 * 1.0 + 4.0) / 5))
    assert result["delta3"] == pytest.approx(0.0)  # ratios 2 and 3 are >= 1.25^3 = 1.953


def test_depth_median_scaling_removes_global_scale():
    reference = np.array([[1.0, 2.0, 4.0]])
    prediction = 3.0 * reference
    plain = DepthMetric(keep_in_memory=True).compute(predictions=[prediction], references=[reference])
    scaled = DepthMetric(median_scaling=True, keep_in_memory=True).compute(
        predictions=[prediction], references=[reference]
    )
    assert plain["abs_rel"] == pytest.approx(2.0)
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-7)
    assert scaled["delta1"] == 1.0


def test_depth_no_valid_pixels_and_bad_input():
    metric = DepthMetric(keep_in_memory=True)
    with pytest.raises(ValueError, match="no valid pixels"):
        metric.compute(predictions=[np.ones((2, 2))], references=[np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        metric.compute(predictions=[np.ones((2, 2))], references=[np.ones((3, 2))])
    with pytest.raises(ValueError, match=r"predictions\[1\].*NaN"):
        metric.compute(predictions=[np.ones((2, 2)), np.full((2, 2), np.nan)], references=[np.ones((2, 2))] * 2)
    with pytest.raises(ValueError, match="valid_masks"):
        metric.compute(predictions=[np.ones((2, 2))], references=[np.ones((2, 2))], valid_masks=[np.ones((2, 3), bool)])
    with pytest.raises(ValueError, match="1 references"):
        metric.compute(predictions=[np.ones((2, 2))] * 2, references=[np.ones((2, 2))])


# ------------------------------------------------------------------ normals


def test_normals_hand_computed_angles():
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    prediction = np.array([[[5.0, 0, 0], [c, s, 0], [2.0, 2.0, 0], [0, 1.0, 0], [0, 0, 0], [1.0, 0, 0]]])
    reference = np.array([[[1.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0, 0, 0]]])
    # angles 0, 10, 45, 90, 90 (zero-length prediction); the last pixel's reference is invalid
    result = SurfaceNormalMetric(keep_in_memory=True).compute(predictions=[prediction], references=[reference])
    assert result["num_pixels"] == 5
    assert result["mean_angle"] == pytest.approx((0 + 10 + 45 + 90 + 90) / 5, abs=1e-4)
    assert result["median_angle"] == pytest.approx(45.0, abs=1e-4)
    assert result["pct_within_11_25"] == pytest.approx(40.0)
    assert result["pct_within_22_5"] == pytest.approx(40.0)
    assert result["pct_within_30"] == pytest.approx(40.0)


def test_normals_mask_and_errors():
    prediction = np.array([[[0, 1.0, 0], [1.0, 0, 0]]])
    reference = np.array([[[1.0, 0, 0], [1.0, 0, 0]]])
    result = SurfaceNormalMetric(keep_in_memory=True).compute(
        predictions=[prediction], references=[reference], valid_masks=[np.array([[False, True]])]
    )
    assert result["mean_angle"] == pytest.approx(0.0, abs=1e-4)
    metric = SurfaceNormalMetric(keep_in_memory=True)
    with pytest.raises(ValueError, match=r"predictions\[0\].*\(H, W, 3\)"):
        metric.compute(predictions=[np.ones((2, 2))], references=[np.ones((2, 2, 3))])
    with pytest.raises(ValueError, match="no valid pixels"):
        metric.compute(predictions=[np.ones((1, 1, 3))], references=[np.zeros((1, 1, 3))])


# ------------------------------------------------------------------ segmentation


def test_segmentation_hand_computed_iou():
    reference = np.array([[0, 0], [1, 2]])
    prediction = np.array([[0, 1], [1, 1]])
    # confusion (true -> pred): 0->0, 0->1, 1->1, 2->1
    # IoU0 = 1/(2+1-1) = 0.5, IoU1 = 1/(1+3-1) = 1/3, IoU2 = 0/(1+0-0) = 0; class 3 absent -> excluded
    result = SegmentationMetric(num_classes=4, keep_in_memory=True).compute(
        predictions=[prediction], references=[reference]
    )
    assert result["pixel_accuracy"] == pytest.approx(0.5)
    assert result["mean_iou"] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3)
    assert result["per_class_iou"][:3] == pytest.approx([0.5, 1 / 3, 0.0])
    assert math.isnan(result["per_class_iou"][3])


def test_segmentation_ignore_index_and_errors():
    reference = np.array([[0, 255], [1, 1]])
    prediction = np.array([[0, 0], [1, 0]])
    result = SegmentationMetric(num_classes=2, ignore_index=255, keep_in_memory=True).compute(
        predictions=[prediction], references=[reference]
    )
    # valid: 0->0, 1->1, 1->0 ; IoU0 = 1/(1+2-1) = 0.5, IoU1 = 1/(2+1-1) = 0.5
    assert result["num_pixels"] == 3
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)
    assert result["mean_iou"] == pytest.approx(0.5)
    metric = SegmentationMetric(num_classes=2, keep_in_memory=True)
    with pytest.raises(ValueError, match=r"references\[0\] has id 255"):
        metric.compute(predictions=[prediction], references=[reference])
    with pytest.raises(ValueError, match="integer"):
        metric.compute(predictions=[prediction.astype(float)], references=[np.zeros((2, 2), int)])
    with pytest.raises(ValueError, match="no valid pixels"):
        SegmentationMetric(num_classes=2, ignore_index=255, keep_in_memory=True).compute(
            predictions=[np.zeros((1, 1), int)], references=[np.full((1, 1), 255)]
        )


# ------------------------------------------------------------------ detection


def test_detection_map_hand_computed():
    references = [
        [{"label": "cube", "box": [0.0, 0.0, 0.5, 0.5]}, {"label": "cube", "box": [0.5, 0.5, 1.0, 1.0]}],
        [{"label": "cone", "box": [0.0, 0.0, 1.0, 1.0]}],
    ]
    predictions = [
        [
            {"label": "cube", "score": 0.9, "box": [0.0, 0.0, 0.5, 0.5]},  # TP
            {"label": "cube", "score": 0.8, "box": [0.0, 0.0, 0.5, 0.5]},  # duplicate -> FP
            {"label": "cube", "score": 0.7, "box": [0.5, 0.5, 1.0, 1.0]},  # TP
            {"label": "sphere", "score": 0.99, "box": [0.0, 0.0, 1.0, 1.0]},  # class without references
        ],
        [{"label": "cone", "score": 0.5, "box": [0.0, 0.0, 0.5, 1.0]}],  # IoU exactly 0.5 -> TP
    ]
    result = DetectionMAP(keep_in_memory=True).compute(predictions=predictions, references=references)
    # COCO: precision envelope 1 up to recall 0.5, 2/3 above, read at the 101 recall points 0, 0.01, ..., 1
    cube = (51 * 1.0 + 50 * 2 / 3) / 101
    assert result["per_class_ap"]["cube"] == pytest.approx(cube)
    assert result["per_class_ap"]["cone"] == pytest.approx(1.0)
    assert "sphere" not in result["per_class_ap"]
    assert result["map"] == pytest.approx((cube + 1.0) / 2)
    # AP@[.50:.95]: cube boxes are exact (the same at every threshold), the cone (IoU 0.5) only counts at 0.50
    assert result["map_50_95"] == pytest.approx((cube + 1.0 / 10) / 2)
    strict = DetectionMAP(iou_threshold=0.6, keep_in_memory=True).compute(predictions=predictions, references=references)
    assert strict["per_class_ap"]["cone"] == 0.0


def _random_detections(rng, num_images, labels):
    def box():
        x, y = rng.uniform(0, 0.7, size=2)
        w, h = rng.uniform(0.05, 0.3, size=2)
        return [float(x), float(y), float(x + w), float(y + h)]

    references, predictions = [], []
    for _ in range(num_images):
        truth = [{"label": str(rng.choice(labels)), "box": box()} for _ in range(rng.integers(0, 4))]
        guesses = []
        for entry in truth:  # jittered copies of the truth (some relabelled), plus noise boxes
            if rng.random() < 0.8:
                jitter = np.clip(np.asarray(entry["box"]) + rng.normal(0, 0.01, 4), 0, 1)
                jitter[2:] = np.maximum(jitter[2:], jitter[:2])
                label = entry["label"] if rng.random() < 0.85 else str(rng.choice(labels))
                guesses.append({"label": label, "score": float(rng.random()), "box": jitter.tolist()})
        guesses += [{"label": str(rng.choice(labels)), "score": float(rng.random()), "box": box()}
                    for _ in range(rng.integers(0, 3))]
        references.append(truth)
        predictions.append(guesses)
    return predictions, references


def test_detection_map_equals_pycocotools_summarize(tmp_path):
    """Our metric against pycocotools used the documented way (COCO json files, COCOeval.summarize)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    predictions, references = _random_detections(np.random.default_rng(0), 40, ["red cube", "blue cone", "green sphere"])
    labels = sorted({e["label"] for boxes in references + predictions for e in boxes})
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    # COCO ids start at 1 (an annotation id of 0 would read as "unmatched")
    truth = {"images": [{"id": i, "width": 1, "height": 1} for i in range(len(references))],
             "categories": [{"id": k + 10, "name": name} for k, name in enumerate(labels)],
             "annotations": [{"id": n + 1, "image_id": i, "category_id": labels.index(e["label"]) + 10, "bbox": xywh(e["box"]),
                              "area": xywh(e["box"])[2] * xywh(e["box"])[3], "iscrowd": 0}
                             for n, (i, e) in enumerate((i, e) for i, boxes in enumerate(references) for e in boxes)]}
    detections = [{"image_id": i, "category_id": labels.index(e["label"]) + 10, "bbox": xywh(e["box"]), "score": e["score"]}
                  for i, boxes in enumerate(predictions) for e in boxes]
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    (tmp_path / "detections.json").write_text(json.dumps(detections))
    coco = COCO(str(tmp_path / "truth.json"))
    evaluation = COCOeval(coco, coco.loadRes(str(tmp_path / "detections.json")), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    ours = DetectionMAP(keep_in_memory=True).compute(predictions=predictions, references=references)
    assert ours["map_50_95"] == pytest.approx(evaluation.stats[0], abs=1e-12)
    assert ours["map"] == pytest.approx(evaluation.stats[1], abs=1e-12)
    assert 0.2 < ours["map"] < 0.95  # a non-trivial case


def test_detection_empty_predictions_and_errors():
    references = [[{"label": "cube", "box": [0.1, 0.1, 0.2, 0.2]}]]
    result = DetectionMAP(keep_in_memory=True).compute(predictions=[[]], references=references)
    assert result["map"] == 0.0
    metric = DetectionMAP(keep_in_memory=True)
    with pytest.raises(ValueError, match="no box"):
        metric.compute(predictions=[[]], references=[[]])
    with pytest.raises(ValueError, match=r"references\[0\]\[0\].*xmin > xmax"):
        metric.compute(predictions=[[]], references=[[{"label": "cube", "box": [0.5, 0.1, 0.2, 0.2]}]])
    with pytest.raises(ValueError, match=r"predictions\[0\]\[0\].*outside \[0, 1\]"):
        metric.compute(
            predictions=[[{"label": "cube", "score": 1.0, "box": [0, 0, 20, 20]}]], references=references
        )
    with pytest.raises(ValueError, match=r"predictions\[0\]\[0\].*score"):
        metric.compute(predictions=[[{"label": "cube", "box": [0, 0, 1, 1]}]], references=references)


# ------------------------------------------------------------------ captions


def test_bleu_hand_computed():
    prediction, reference = "the cat sat on the mat", "the cat is on the mat"
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3
    plain = CaptionBLEU(smooth_method="none", keep_in_memory=True).compute(predictions=[prediction], references=[reference])
    assert plain["precisions"] == pytest.approx([5 / 6, 3 / 5, 1 / 4, 0.0])
    assert plain["bleu"] == 0.0 and plain["brevity_penalty"] == 1.0
    assert "smooth:none" in plain["signature"] and "tok:13a" in plain["signature"]
    # add-one for n >= 2: p2 = 4/6, p3 = 2/5, p4 = 1/4
    smooth = CaptionBLEU(smooth_method="add-k", smooth_value=1, keep_in_memory=True).compute(
        predictions=[prediction], references=[reference])
    assert smooth["bleu"] == pytest.approx((5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    # sacreBLEU's default exp smoothing: the zero 4-gram count becomes 1 / (2 * 3)
    default = CaptionBLEU(keep_in_memory=True).compute(predictions=[prediction], references=[reference])
    assert default["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)
    # 13a splits punctuation off and is case-sensitive: "Cube." is two tokens, neither "cube"
    punctuated = CaptionBLEU(max_order=1, keep_in_memory=True).compute(predictions=["a red cube ."], references=["a red Cube."])
    assert punctuated["precisions"] == pytest.approx([3 / 4])


def test_bleu_brevity_penalty_and_closest_reference():
    short = CaptionBLEU(max_order=2, keep_in_memory=True).compute(
        predictions=["the cat"], references=["the cat sat on the mat"]
    )
    assert short["brevity_penalty"] == pytest.approx(math.exp(1 - 6 / 2))
    assert short["bleu"] == pytest.approx(math.exp(-2))
    # lengths 2 and 4 are equally close to 3: the shorter one is used, so c > r and BP = 1
    tie = CaptionBLEU(max_order=1, keep_in_memory=True).compute(
        predictions=["a b c"], references=[["a b", "a b c d"]]
    )
    assert tie["reference_length"] == 2
    assert tie["brevity_penalty"] == 1.0
    empty = CaptionBLEU(keep_in_memory=True).compute(predictions=[""], references=["a red cube"])
    assert empty["bleu"] == 0.0


def test_bleu_equals_sacrebleu_corpus_bleu():
    """Our metric against sacrebleu.corpus_bleu on the same captions, with one to three references each."""
    import sacrebleu

    from fourm_hf.data.scenes import render_scene

    rng = np.random.default_rng(0)
    captions = [render_scene(seed, 32)["caption"] for seed in range(12)]
    predictions, references = [], []
    for caption in captions:
        words = caption.split()
        keep = rng.random(len(words)) > 0.25
        predictions.append(" ".join(w for w, k in zip(words, keep) if k))
        references.append([caption] + [captions[int(j)] for j in rng.integers(0, len(captions), rng.integers(0, 3))])
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(3)]
    expected = sacrebleu.corpus_bleu(predictions, streams)
    ours = CaptionBLEU(keep_in_memory=True).compute(predictions=predictions, references=references)
    assert ours["bleu"] == pytest.approx(expected.score / 100, abs=1e-12)
    assert ours["precisions"] == pytest.approx([p / 100 for p in expected.precisions], abs=1e-12)
    assert 0.2 < ours["bleu"] < 0.95


def test_caption_errors():
    metric = CaptionBLEU(keep_in_memory=True)
    with pytest.raises(ValueError, match=r"predictions\[0\] must be a string"):
        metric.compute(predictions=[3], references=["a"])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        metric.compute(predictions=["a"], references=[[]])
    with pytest.raises(ValueError, match="nothing to compute"):
        CaptionBLEU(keep_in_memory=True).compute()


def test_object_f1_mentions_and_scores():
    metric = CaptionObjectF1(colours=["red", "green", "blue"], shapes=["sphere", "cube", "cone"], keep_in_memory=True)
    assert metric.extract_mentions("Two red cubes, a big blue metal sphere and a green.") == {
        ("red", "cube"),
        ("blue", "sphere"),
    }
    result = metric.compute(
        predictions=["a red cube and a blue sphere", "a green cone"],
        references=["two red cubes.", "a green cone and a red sphere"],
    )
    # matched: (red,cube), (green,cone) = 2; predicted 3; referenced 3
    assert result["num_matched"] == 2
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    # vocabularies given to compute override the constructor's
    other = metric.compute(predictions=["a red cone"], references=["a red cone"], colours=["red"], shapes=["cone"])
    assert other["f1"] == 1.0
    empty = metric.compute(predictions=[""], references=["a red cube"])
    assert (empty["precision"], empty["recall"], empty["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="colours"):
        CaptionObjectF1(keep_in_memory=True).compute(predictions=["a"], references=["a"])
