"""What the resumable, sharded dataset writers share (``make-scenes``, ``build-corpus``, ``pseudo-label``).

Each writes its dataset as shards saved atomically under ``<out>.shards/``, named by
:func:`shard_name`, while its own progress bar counts items: :func:`quiet_datasets` hides the
per-save bars of ``datasets`` meanwhile.
"""

from __future__ import annotations

import contextlib


def shard_name(shard: int, num_shards: int) -> str:
    """Folder name of shard ``shard`` of ``num_shards``: ``shard-00002-of-00004``."""
    return f"shard-{shard:05d}-of-{num_shards:05d}"


@contextlib.contextmanager
def quiet_datasets():
    """Hide datasets' own progress bars and restore the setting afterwards."""
    from datasets import utils as datasets_utils

    was_disabled = datasets_utils.are_progress_bars_disabled()
    datasets_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets_utils.enable_progress_bars()
