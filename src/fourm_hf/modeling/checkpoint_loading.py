"""What ``from_pretrained`` refuses: unreadable weights files and incomplete 4M checkpoints.

transformers loads a checkpoint whose tensors do not match the model with a warning and random
weights where tensors are missing. A 4M checkpoint loaded into ``FourMModel`` must match exactly;
a caller who expects a partial match asks for ``output_loading_info=True`` (transformers' own way
to receive the missing / unexpected keys) and gets the model with that report instead of an error.
"""

from __future__ import annotations

import os

SHOWN_KEYS = 5


def unreadable_weights_file(pretrained_model_name_or_path) -> str:
    """The path of the first local ``*.safetensors`` file safetensors cannot open, else a generic name."""
    folder = os.fspath(pretrained_model_name_or_path)
    if not os.path.isdir(folder):
        return "model.safetensors"
    from safetensors import safe_open

    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(folder, name)
        try:
            with safe_open(path, framework="pt"):
                pass
        except Exception:
            return path
    return os.path.join(folder, "model.safetensors")


def check_complete_load(class_name: str, source, loading_info: dict, ignore_mismatched_sizes: bool) -> None:
    """Raise a ValueError when tensors were missing from the checkpoint, or left over, or (unless the
    caller passed ``ignore_mismatched_sizes=True``) of another shape."""
    problems = []
    for field, meaning in (("missing_keys", "missing from the checkpoint (they would be random)"),
                           ("unexpected_keys", "in the checkpoint but not in the model"),
                           ("mismatched_keys", "of another shape")):
        keys = sorted(str(key[0] if isinstance(key, tuple) else key) for key in loading_info.get(field) or ())
        if field == "mismatched_keys" and ignore_mismatched_sizes:
            continue
        if keys:
            shown = ", ".join(keys[:SHOWN_KEYS]) + (f", ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else "")
            problems.append(f"{len(keys)} tensors {meaning}: {shown}")
    if problems:
        raise ValueError(f"{class_name}.from_pretrained({os.fspath(source)!r}): the checkpoint does not match the model's "
                         f"config: {'; '.join(problems)}. Pass output_loading_info=True to load it anyway and receive "
                         "these keys.")


__all__ = ["check_complete_load", "unreadable_weights_file"]
