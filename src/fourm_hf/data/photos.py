"""A few real photographs that ship inside scikit-image, with captions written here.

They are for smoke tests and demos on a machine with no network: ``load_photos()`` returns them
as RGB PIL images. Only images bundled in the scikit-image wheel are used (``eagle``, ``lily``
and ``skin`` need a download and are left out).

``stereo_motorcycle`` comes with ground-truth disparity (Middlebury 2014 "Motorcycle", down-sampled
4x by scikit-image). Its depth is computed with the Middlebury formula

    Z = baseline * focal / (disparity + doffs)

using the calibration scikit-image documents for the down-sampled images: focal 994.978 px,
baseline 193.001 mm, doffs (difference of the principal points' x) 31.086 px. The result is in
metres and approximate (calibration rounded, disparity down-sampled); pixels without
ground truth (infinite or NaN disparity in the file) are NaN.
"""

from __future__ import annotations

import numpy as np

MOTORCYCLE_FOCAL_PIXELS = 994.978
MOTORCYCLE_BASELINE_METRES = 0.193001
MOTORCYCLE_DOFFS_PIXELS = 31.086

# photo name (its skimage.data loader; "motorcycle" is the left view of stereo_motorcycle) -> our caption
PHOTO_CAPTIONS = {
    "astronaut": "a portrait of a smiling astronaut in an orange spacesuit next to an american flag and a model space shuttle.",
    "chelsea": "a close-up of a tabby cat with green eyes.",
    "coffee": "a cup of coffee on a red saucer with a spoon on a wooden table.",
    "rocket": "a rocket on a launch pad between two towers at dusk.",
    "motorcycle": "a red motorcycle parked in a workshop with shelves and boxes.",
    "camera": "a black and white photo of a man in a coat looking through a camera on a tripod in a field.",
    "coins": "a black and white photo of rows of old coins on a dark background.",
    "hubble_deep_field": "a deep space photo with many small galaxies on a black sky.",
}
"""Photo name -> caption (written for this package)."""


def _import_skimage_data():
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("fourm_hf.data.photos needs scikit-image: pip install scikit-image") from error
    return data


def _to_rgb(array: np.ndarray):
    """uint8 (H, W), (H, W, 3) or (H, W, 4) -> RGB PIL image (alpha composited over white)."""
    from PIL import Image

    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.ndim == 3 and array.shape[2] == 4:
        rgba = Image.fromarray(array, mode="RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if array.ndim == 3 and array.shape[2] == 3:
        return Image.fromarray(array, mode="RGB")
    raise ValueError(f"photo: expected a (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")


def disparity_to_depth(disparity: np.ndarray) -> np.ndarray:
    """Middlebury disparity (H, W) in pixels -> float32 depth (H, W) in metres; pixels without ground
    truth (disparity inf or NaN) get NaN."""
    disparity = np.where(np.isfinite(disparity), disparity, np.nan)
    return (MOTORCYCLE_BASELINE_METRES * MOTORCYCLE_FOCAL_PIXELS / (disparity + MOTORCYCLE_DOFFS_PIXELS)).astype(np.float32)


def load_photos() -> list[dict]:
    """The bundled photographs: a list of ``{"name", "image" (RGB PIL), "caption"}``; the motorcycle
    also has ``"depth"``: float32 (H, W) metres, NaN where there is no ground truth."""
    data = _import_skimage_data()
    photos = []
    for name, caption in PHOTO_CAPTIONS.items():
        if name == "motorcycle":
            left, _right, disparity = data.stereo_motorcycle()
            photos.append({"name": name, "image": _to_rgb(left), "caption": caption, "depth": disparity_to_depth(disparity)})
        else:
            photos.append({"name": name, "image": _to_rgb(getattr(data, name)()), "caption": caption})
    return photos
