"""Generator checkpoints: our own format and the authors' release format, one entry point.

Everything is read with ``torch.load(weights_only=True)``: no pickled code runs.

Our format is a dict::

    {"format": "dwsfusion-generator", "version": 1,
     "generator_config": {...}, "generator": state_dict, "meta": {...}}

A training checkpoint (``dwsfusion train``'s folder, or the ``state.pt`` in it: format
``dwsfusion-train``) is read too: its best generator, or the current one before any epoch was
best. The release format is a plain state dict with the authors' module names, renamed through
the explicit table ``OFFICIAL_KEY_RULES``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .errors import UsageError
from .files import atomic_path
from .model import Generator, GeneratorConfig

FORMAT = "dwsfusion-generator"
VERSION = 1
TRAIN_FORMAT = "dwsfusion-train"  # pipelines.train's checkpoint: nets, optimisers, best, history
TRAIN_STATE_FILE = "state.pt"  # the file in each of its checkpoint folders

# (pattern, replacement), applied in order to every key of the release's state dict.
OFFICIAL_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^WGet_IR\.", "weight_ir."),
    (r"^WGet_VI\.", "weight_vi."),
    (r"^Fusion\.feature_extract\.0\.", "fusion.conv_in."),
    (r"^Fusion\.feature_extract\.1\.", "fusion.att."),
    (r"^Fusion\.conv4\.", "fusion.conv_out."),
    (r"^Fusion\.channel_match\.", "fusion.skip."),
    (r"^alphanet\.fc1\.", "alpha.fc."),
    (r"^alphanet\.", "alpha."),
    (r"\.conv1\.(conv1|bn|conv2)\.", r".down1.\1."),  # WeightNet blocks
    (r"\.conv2\.(conv1|bn|conv2)\.", r".down2.\1."),
    (r"\.conv3\.upcbar\.", ".up1.upcbar."),
    (r"\.conv4\.upcbar\.", ".up2.upcbar."),
    (r"\.upcbar\.0\.", ".deconv1."),
    (r"\.upcbar\.1\.", ".bn1."),
    (r"\.upcbar\.3\.", ".deconv2."),
    (r"\.upcbar\.4\.", ".bn2."),
    (r"\.cbam([1-4])\.", r".att\1."),
    (r"\.channel_attention\.fc\.0\.", ".channel.fc1."),
    (r"\.channel_attention\.fc\.2\.", ".channel.fc2."),
    (r"\.spatial_attention\.conv1\.", ".spatial.conv."),
    (r"\.OMNI_ATT1\.", ".omni_low."),
    (r"\.OMNI_ATT2\.", ".omni_high."),
    (r"\.omni_(low|high)\.fc\.", r".omni_\1.squeeze."),
    (r"\.omni_(low|high)\.channel_fc\.", r".omni_\1.channel_gate."),
    (r"\.omni_(low|high)\.filter_fc\.", r".omni_\1.filter_gate."),
    (r"\.conv_offset\.", ".offset_conv."),
    (r"\.conv_mask\.", ".mask_conv."),
    (r"\.FS\.freq_weight_conv_list\.", ".freq_select.gates."),
)
# The release's fixed tap pattern buffer; ours is a constant in code, so it is checked, not loaded.
_RELEASE_TAPS = torch.tensor([-1, -1, -1, 0, -1, 1, 0, -1, 0, 0, 0, 1, 1, -1, 1, 0, 1, 1.0])


class CheckpointError(UsageError):
    """A checkpoint file that cannot be used, with the file and the reason in the message."""


def rename_official_key(key: str) -> str:
    for pattern, replacement in OFFICIAL_KEY_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_official_state_dict(state: dict[str, torch.Tensor], source: str = "<state dict>") -> dict:
    """Map the release's state dict onto ours. Zero-width channel-MLP weights (the release's
    c // 16 = 0) are dropped: our CBAM reproduces them as the constant 0.5 gate."""
    converted = {}
    for key, value in state.items():
        if key.endswith("dilated_offset"):
            if not torch.equal(value.flatten().float(), _RELEASE_TAPS):
                raise CheckpointError(f"{source}: {key} is not the standard 3x3 tap pattern")
            continue
        if "channel_attention.fc" in key and value.numel() == 0:
            continue
        converted[rename_official_key(key)] = value
    return converted


def is_official_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and any(isinstance(k, str) and k.startswith("WGet_IR.") for k in obj)


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Generator:
    """Build a generator from our checkpoint (a generator file or a training checkpoint) or
    from the authors' released state dict."""
    path = checkpoint_file(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        config = GeneratorConfig(**obj.get("generator_config", {}))
        state = obj["generator"]
    elif isinstance(obj, dict) and obj.get("format") == TRAIN_FORMAT:
        config = GeneratorConfig(**obj.get("generator_config", {}))
        best = obj.get("best") or {}
        state = best.get("generator") or obj.get("nets", {}).get("generator")
        if state is None:
            raise CheckpointError(f"{path}: a training checkpoint without a generator")
    elif is_official_state_dict(obj):
        config = GeneratorConfig()
        state = convert_official_state_dict(obj, str(path))
    else:
        raise CheckpointError(f"{path}: neither a DWSFusion checkpoint nor the authors' state dict")

    generator = Generator(config)
    missing, unexpected = generator.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: keys do not match the generator (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return generator.eval()


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file behind a checkpoint argument: the file itself, or a training checkpoint
    folder's ``state.pt`` (what ``dwsfusion train`` prints as its last checkpoint)."""
    path = Path(path)
    if path.is_dir() and (path / TRAIN_STATE_FILE).is_file():
        return path / TRAIN_STATE_FILE
    if not path.is_file():
        hint = f" (a folder without {TRAIN_STATE_FILE})" if path.is_dir() else ""
        raise CheckpointError(f"{path}: checkpoint not found{hint}")
    return path


def save_generator(generator: Generator, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write our format atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "generator_config": generator.config.to_dict(),
        "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "meta": meta or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
