"""``fourm-hf pseudo-label``: add pseudo-labels to images with transformers models (``fourm_hf.data.pseudo_label``)."""

from __future__ import annotations

import argparse
import os

from ..data.pseudo_label import DEFAULT_FIELD_OF_VIEW_DEGREES, build_labellers, merge_shards, pseudo_label_dataset


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
