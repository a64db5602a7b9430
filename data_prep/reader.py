"""Read prepared shards back as a Ray Dataset of (N, P, P) uint8 patches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .manifest import load_manifest, shard_uris


def patch_arrays(table: pa.Table, patch: int) -> dict[str, np.ndarray]:
    """Shard rows -> {"ir", "vi": (N, P, P) uint8, "y", "x": (N,) int32}: zero-copy views of
    the fixed-size binary buffers, no per-row Python."""
    out: dict[str, np.ndarray] = {}
    for name in ("y", "x"):
        if name in table.column_names:
            out[name] = table.column(name).to_numpy()
    size = patch * patch
    for name in ("ir", "vi"):
        if name in table.column_names:
            column = table.column(name).combine_chunks()
            flat = np.frombuffer(column.buffers()[1], np.uint8, count=len(column) * size, offset=column.offset * size)
            out[name] = flat.reshape(len(column), patch, patch)
    return out


def read_patches(out: str, split: str, columns: tuple[str, ...] = ("ir", "vi")):
    """A Ray Dataset of one split: ``.iter_torch_batches()`` yields uint8 (B, P, P) tensors."""
    import ray  # Ray: heavy and optional, imported on use

    patch = load_manifest(out)["config"]["patch_size"]
    # select_columns is pushed down into the Parquet read (the columns= argument is deprecated)
    dataset = ray.data.read_parquet(shard_uris(out, split)).select_columns(list(columns))
    return dataset.map_batches(patch_arrays, batch_format="pyarrow", fn_kwargs={"patch": patch})
