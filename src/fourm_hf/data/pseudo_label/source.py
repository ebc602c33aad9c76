"""The input images: a folder of image files or a saved dataset with an image column."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .images import IMAGE_EXTENSIONS, UnreadableImageError, decode_image


class ImageSource:
    """The input images in a fixed order: ``sources[i]`` names item i, ``read(i)`` returns its RGB PIL image."""

    def __init__(self, location: str, image_column: str | None = None):
        self.location = Path(location)
        if not self.location.is_dir():
            raise ValueError(f"pseudo-label: --images {location} is not a directory (expected a folder of images or a dataset saved with save_to_disk)")
        self.dataset = None
        if (self.location / "dataset_dict.json").is_file():
            splits = json.loads((self.location / "dataset_dict.json").read_text()).get("splits", [])
            raise ValueError(f"pseudo-label: --images {location} is a DatasetDict with splits {splits}; pass one split's folder, e.g. {self.location / (splits[0] if splits else 'train')}")
        if (self.location / "state.json").is_file():
            self._open_dataset(image_column)
        else:
            self.files = sorted(
                p.relative_to(self.location).as_posix() for p in self.location.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not self.files:
                raise ValueError(f"pseudo-label: --images {location} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
            self.sources = self.files
            self.extra_features = {}

    def _open_dataset(self, image_column):
        from datasets import Image, load_from_disk

        dataset = load_from_disk(str(self.location))
        image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, Image)]
        if image_column is None:
            image_column = "rgb" if "rgb" in image_columns else "image" if "image" in image_columns else (image_columns[0] if image_columns else None)
        if image_column is None or image_column not in dataset.column_names:
            raise ValueError(f"pseudo-label: dataset {self.location} has no image column {image_column!r}; its image columns are {image_columns}")
        if len(dataset) == 0:
            raise ValueError(f"pseudo-label: dataset {self.location} is empty")
        self.image_column = image_column
        self.dataset = dataset.cast_column(image_column, Image(decode=False))  # decode ourselves: bad images are reported
        self.sources = [str(i) for i in range(len(dataset))]
        self.extra_features = {name: f for name, f in dataset.features.items() if name != image_column}

    def __len__(self):
        return len(self.sources)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.sources).encode()).hexdigest()

    def read(self, index: int):
        """(RGB PIL image, extra columns of that row) for item ``index``; raises UnreadableImageError."""
        if self.dataset is None:
            return decode_image(path=str(self.location / self.files[index])), {}
        row = self.dataset[index]
        encoded = row.pop(self.image_column)
        if encoded is None:
            raise UnreadableImageError("the image is missing (None)")
        data = encoded.get("bytes")
        return decode_image(data=data, path=None if data is not None else encoded.get("path")), row
