"""``fourm-hf pseudo-label``: add pseudo-labels to images with transformers models (``fourm_hf.data.pseudo_label``)."""

from __future__ import annotations

import argparse
import os

from ..data.pseudo_label import DEFAULT_FIELD_OF_VIEW_DEGREES, build_labellers, merge_shards, pseudo_label_dataset
from ..data.pseudo_label.derived.canny_edge import DEFAULT_CANNY_SIGMA, DEFAULT_CANNY_THRESHOLDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", help="folder of image files, or a dataset saved with save_to_disk (one split)")
    parser.add_argument("--out", required=True, help="output directory (datasets.save_to_disk format)")
    parser.add_argument("--depth-model", help="depth-estimation model (local folder or Hub id): DPT, Depth Anything, ...")
    parser.add_argument("--segmentation-model", help="semantic segmentation model: SegFormer, Mask2Former, ...")
    parser.add_argument("--detection-model", help="object-detection model: DETR, RT-DETR, YOLOS, ...")
    parser.add_argument("--caption-model", help="image-text-to-text captioning model: BLIP, GIT, ...")
    parser.add_argument("--feature-model", help="vision tower for the 'clip' feature map: CLIP, SigLIP, DINOv2, ...")
    parser.add_argument("--size", type=int, default=224, help="side of the square centre crop every column is computed on")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call")
    parser.add_argument("--shard-size", type=int, default=256, help="images per resumable shard")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cuda under accelerate: cuda:LOCAL_RANK)")
    parser.add_argument("--num-processes", type=int, default=int(os.environ.get("WORLD_SIZE", 1)), help="processes sharing the work (default: $WORLD_SIZE or 1)")
    parser.add_argument("--process-index", type=int, default=int(os.environ.get("RANK", 0)), help="this process's index (default: $RANK or 0)")
    parser.add_argument("--merge", action="store_true", help="only merge the finished shards of a multi-process run into --out")
    parser.add_argument("--image-column", help="image column of an input dataset (default: rgb, image, or the first Image column)")
    parser.add_argument("--replace-existing", action="store_true", help="let labelled columns replace same-named columns of an input dataset")
    parser.add_argument("--no-normals", action="store_true", help="do not derive normals from depth")
    parser.add_argument("--field-of-view", type=float, default=DEFAULT_FIELD_OF_VIEW_DEGREES, help="assumed horizontal field of view (degrees) for normals")
    parser.add_argument("--depth-kind", choices=("auto", "metric", "relative-inverse"), default="auto", help="what the depth model predicts")
    parser.add_argument("--detection-threshold", type=float, default=0.5, help="minimum detection score")
    parser.add_argument("--feature-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--caption-prompt", default="", help="text the caption continues (e.g. 'a picture of')")
    parser.add_argument("--caption-max-new-tokens", type=int, default=30)
    parser.add_argument("--t5-model", help="T5 model (local folder or Hub id) whose encoder embeds the caption column into 't5_caption' (4M-21: google/t5-v1_1-xxl)")
    parser.add_argument("--t5-max-length", type=int, default=77, help="most T5 tokens kept per caption (4M-21: 77)")
    parser.add_argument("--t5-dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="compute dtype of the T5 encoder (stored as float16)")
    parser.add_argument("--canny", action="store_true", help="add 'canny_edge': Canny edges of the grayscale image")
    parser.add_argument("--canny-sigma", type=float, default=DEFAULT_CANNY_SIGMA, help="Gaussian smoothing of the Canny detector (pixels)")
    parser.add_argument("--canny-thresholds", type=float, nargs=2, default=DEFAULT_CANNY_THRESHOLDS, metavar=("LOW", "HIGH"), help="Canny hysteresis thresholds on the [0, 1] grayscale gradient")
    parser.add_argument("--color-palette", action="store_true", help="add 'color_palette': 1..7 dominant colours of the image")
    parser.add_argument("--palette-colors", default="random", help="colours per palette: 1..7, or 'random' (a per-image size in 1..7, as 4M-21 draws)")
    parser.add_argument("--metadata", action="store_true", help="add 'metadata': 4M-21's metadata keys computed from the image and the other columns")
    parser.add_argument("--sam-model", help="SamModel for 4M-21's sam_instance (and sam_edge): facebook/sam-vit-huge, ...")
    parser.add_argument("--sam-points-per-side", type=int, default=32, help="point prompts per side of SAM's automatic mask generation")
    parser.add_argument("--sam-query-points-per-side", type=int, default=7, help="query points per side stored in sam_instance (the reference's 7)")
    parser.add_argument("--sam-pred-iou-thresh", type=float, default=0.88, help="keep SAM masks whose predicted IoU is above this")
    parser.add_argument("--sam-stability-thresh", type=float, default=0.95, help="keep SAM masks whose stability score is above this")
    parser.add_argument("--no-sam-edges", action="store_true", help="do not draw sam_edge from the SAM instance masks")
    parser.add_argument("--dinov2-model", help="Dinov2Model for 4M-21's dinov2 patch features and dinov2_global CLS: facebook/dinov2-base, ...")
    parser.add_argument("--human-poses-model", help="not available: transformers has no SMPL regressor (the error says what to do instead)")
    parser.add_argument("--human-poses-from-input", action="store_true", help="validate and carry through the input dataset's human_poses column")


def _palette_colors(value: str):
    if value == "random":
        return value
    if not value.isdigit():
        raise ValueError(f"pseudo-label: --palette-colors must be 'random' or an integer 1..7, got {value!r}")
    return int(value)


def main(args: argparse.Namespace) -> int:
    if args.merge:
        dataset = merge_shards(args.out)
    else:
        if not args.images:
            raise ValueError("pseudo-label: --images is required (unless --merge)")
        device = args.device
        if device == "cuda" and "LOCAL_RANK" in os.environ:
            device = f"cuda:{os.environ['LOCAL_RANK']}"
        labellers = build_labellers(
            args.depth_model, args.segmentation_model, args.detection_model, args.caption_model, args.feature_model,
            device=device, batch_size=args.batch_size, normals=not args.no_normals, field_of_view_degrees=args.field_of_view,
            depth_kind=args.depth_kind, detection_threshold=args.detection_threshold, feature_dtype=args.feature_dtype,
            caption_prompt=args.caption_prompt, caption_max_new_tokens=args.caption_max_new_tokens,
            t5_model=args.t5_model, t5_max_length=args.t5_max_length, t5_dtype=args.t5_dtype, canny=args.canny,
            canny_sigma=args.canny_sigma, canny_thresholds=tuple(args.canny_thresholds), color_palette=args.color_palette,
            palette_colors=_palette_colors(args.palette_colors), metadata=args.metadata,
            sam_model=args.sam_model, sam_points_per_side=args.sam_points_per_side,
            sam_query_points_per_side=args.sam_query_points_per_side, sam_pred_iou_thresh=args.sam_pred_iou_thresh,
            sam_stability_score_thresh=args.sam_stability_thresh, sam_edges=not args.no_sam_edges,
            dinov2_model=args.dinov2_model, human_poses_model=args.human_poses_model,
            human_poses_from_input=args.human_poses_from_input,
        )
        dataset = pseudo_label_dataset(
            args.images, args.out, labellers, size=args.size, batch_size=args.batch_size, shard_size=args.shard_size,
            num_processes=args.num_processes, process_index=args.process_index, image_column=args.image_column,
            replace_existing=args.replace_existing,
        )
    if dataset is None:
        print(f"process {args.process_index} of {args.num_processes}: shards done; merge with `fourm-hf pseudo-label --out {args.out} --merge` once all processes finished")
    else:
        print(f"wrote {len(dataset)} labelled images with columns {dataset.column_names} to {args.out}")
    return 0
