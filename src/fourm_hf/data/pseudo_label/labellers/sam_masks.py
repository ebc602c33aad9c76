"""SAM's automatic mask generation on a transformers ``SamModel``: point-grid prompts, quality filters, box NMS.

The steps are those of Segment Anything's automatic mask generator (and of transformers' ``mask-generation``
pipeline, which needs torchvision for its NMS; torchvision is not a dependency here):

1. the image encoder runs once per image (batched over images);
2. a grid of ``points_per_side`` x ``points_per_side`` single-point prompts, at the centres of a regular grid
   over the image, goes through the prompt encoder and mask decoder in chunks of ``points_per_batch``, three
   candidate masks per point (``multimask_output``);
3. candidates whose predicted IoU is ``<= pred_iou_thresh`` are dropped, the rest are resized to the image
   (the low-resolution logits of the un-padded region, bilinear, in one step: SAM upsamples to the padded
   input first and then to the image, two bilinear steps that give nearly the same map), and those whose
   stability score (IoU of the masks thresholded at +offset and -offset) is ``<= stability_score_thresh`` are
   dropped; empty masks are dropped;
4. greedy non-maximum suppression on the masks' boxes (IoU ``> nms_iou_thresh`` with a better-scored mask).

SAM's multi-crop layers (``crop_n_layers``) are not run: at the 224 px of 4M-21 one crop covers the image.
A threshold of 0 switches its filter off.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def point_grid(points_per_side: int, height: int, width: int) -> np.ndarray:
    """(points_per_side**2, 2) float32 (x, y) pixel coordinates of the cell centres of a regular grid, row-major."""
    steps = (np.arange(points_per_side) + 0.5) / points_per_side
    ys, xs = np.meshgrid(steps * height, steps * width, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float32 boxes (xmin, ymin, xmax + 1, ymax + 1) in pixels (edges of the pixels)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4))
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    height, width = masks.shape[1:]
    ys, xs = torch.arange(height), torch.arange(width)
    ymin = torch.where(rows, ys, height).min(dim=1).values
    ymax = torch.where(rows, ys, -1).max(dim=1).values
    xmin = torch.where(cols, xs, width).min(dim=1).values
    xmax = torch.where(cols, xs, -1).max(dim=1).values
    return torch.stack([xmin, ymin, xmax + 1, ymax + 1], dim=1).float()


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes (N, 4) in descending score order (ties: lower index first)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_thresh
    return order[torch.tensor(keep, dtype=torch.long)]


class AutomaticMaskGenerator:
    """Instance masks of whole images from a ``SamModel`` and its image processor (steps in the module docstring)."""

    def __init__(self, model, image_processor, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, nms_iou_thresh: float = 0.7):
        self.model, self.image_processor = model, image_processor
        self.points_per_side, self.points_per_batch = points_per_side, points_per_batch
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.stability_score_offset, self.nms_iou_thresh = stability_score_offset, nms_iou_thresh

    @property
    def device(self):
        return next(self.model.parameters()).device

    def __call__(self, images) -> list[tuple[np.ndarray, np.ndarray]]:
        """RGB PIL images -> per image (masks (N, H, W) bool, scores (N,) float32), best predicted IoU first."""
        inputs = self.image_processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            results = []
            for index in range(len(images)):
                original = [int(v) for v in inputs["original_sizes"][index]]
                resized = [int(v) for v in inputs["reshaped_input_sizes"][index]]
                results.append(self._one_image(embeddings[index : index + 1], original, resized))
        return results

    def _one_image(self, embedding, original, resized):
        height, width = original
        points = torch.from_numpy(point_grid(self.points_per_side, height, width))
        points = points * torch.tensor([resized[1] / width, resized[0] / height])  # into the encoder's frame
        all_masks, all_scores = [], []
        for start in range(0, len(points), self.points_per_batch):
            chunk = points[start : start + self.points_per_batch].to(self.device)
            outputs = self.model(
                image_embeddings=embedding, input_points=chunk[None, :, None, :],
                input_labels=torch.ones((1, len(chunk), 1), dtype=torch.long, device=self.device), multimask_output=True,
            )
            masks, scores = self._filter(outputs.pred_masks[0].flatten(0, 1), outputs.iou_scores[0].flatten(), original, resized)
            all_masks.append(masks)
            all_scores.append(scores)
        masks, scores = torch.cat(all_masks), torch.cat(all_scores)
        if len(masks):
            keep = box_nms(masks_to_boxes(masks), scores, self.nms_iou_thresh)
            masks, scores = masks[keep], scores[keep]
        return masks.numpy(), scores.numpy().astype(np.float32)

    def _filter(self, low_res: torch.Tensor, scores: torch.Tensor, original, resized):
        """(M, h, w) low-resolution logits, (M,) predicted IoU -> kept (K, H, W) bool masks on CPU, (K,) scores."""
        if self.pred_iou_thresh > 0:
            keep = scores > self.pred_iou_thresh
            low_res, scores = low_res[keep], scores[keep]
        pad = self.image_processor.pad_size
        valid_h = int(np.ceil(resized[0] * low_res.shape[-2] / pad["height"]))
        valid_w = int(np.ceil(resized[1] * low_res.shape[-1] / pad["width"]))
        logits = low_res[:, :valid_h, :valid_w].float()
        if len(logits):
            logits = F.interpolate(logits[:, None], size=tuple(original), mode="bilinear", align_corners=False)[:, 0]
        else:
            logits = logits.new_zeros((0, *original))
        if self.stability_score_thresh > 0:
            strict = (logits > self.stability_score_offset).sum(dim=(1, 2))
            loose = (logits > -self.stability_score_offset).sum(dim=(1, 2))
            stability = strict / loose.clamp(min=1)
            keep = stability > self.stability_score_thresh
            logits, scores = logits[keep], scores[keep]
        masks = logits > 0
        nonempty = masks.flatten(1).any(dim=1)
        return masks[nonempty].cpu(), scores[nonempty].float().cpu()
