"""Test helper: our state dict -> the authors' release naming, written independently of
``OFFICIAL_KEY_RULES`` (the inverse direction), so a test can check the two agree."""

import re

import torch

_OURS_TO_RELEASE = (
    (r"^weight_ir\.", "WGet_IR."),
    (r"^weight_vi\.", "WGet_VI."),
    (r"^fusion\.conv_in\.", "Fusion.feature_extract.0."),
    (r"^fusion\.att\.", "Fusion.feature_extract.1."),
    (r"^fusion\.conv_out\.", "Fusion.conv4."),
    (r"^fusion\.skip\.", "Fusion.channel_match."),
    (r"^alpha\.fc\.", "alphanet.fc1."),
    (r"^alpha\.", "alphanet."),
    (r"\.down1\.", ".conv1."),
    (r"\.down2\.", ".conv2."),
    (r"\.up1\.deconv1\.", ".conv3.upcbar.0."),
    (r"\.up1\.bn1\.", ".conv3.upcbar.1."),
    (r"\.up1\.deconv2\.", ".conv3.upcbar.3."),
    (r"\.up1\.bn2\.", ".conv3.upcbar.4."),
    (r"\.up2\.deconv1\.", ".conv4.upcbar.0."),
    (r"\.up2\.bn1\.", ".conv4.upcbar.1."),
    (r"\.up2\.deconv2\.", ".conv4.upcbar.3."),
    (r"\.up2\.bn2\.", ".conv4.upcbar.4."),
    (r"\.att([1-4])\.", r".cbam\1."),
    (r"\.spatial\.conv\.", ".spatial_attention.conv1."),
    (r"\.omni_low\.", ".OMNI_ATT1."),
    (r"\.omni_high\.", ".OMNI_ATT2."),
    (r"\.squeeze\.", ".fc."),
    (r"\.channel_gate\.", ".channel_fc."),
    (r"\.filter_gate\.", ".filter_fc."),
    (r"\.offset_conv\.", ".conv_offset."),
    (r"\.mask_conv\.", ".conv_mask."),
    (r"\.freq_select\.gates\.", ".FS.freq_weight_conv_list."),
)
TAPS = torch.tensor([-1, -1, -1, 0, -1, 1, 0, -1, 0, 0, 0, 1, 1, -1, 1, 0, 1, 1.0]).view(1, 1, 18, 1, 1)


def release_state_dict(ours: dict) -> dict:
    out = {}
    for key, value in ours.items():
        for pattern, replacement in _OURS_TO_RELEASE:
            key = re.sub(pattern, replacement, key)
        out[key] = value
        if key.endswith(".conv_offset.weight"):  # every FADC carries the tap buffer
            out[key.replace(".conv_offset.weight", ".dilated_offset")] = TAPS.clone()
        if key.endswith(".spatial_attention.conv1.weight"):  # the zero-width channel MLP
            cbam = key[: -len("spatial_attention.conv1.weight")]
            out[cbam + "channel_attention.fc.0.weight"] = torch.zeros(0, 4)
            out[cbam + "channel_attention.fc.2.weight"] = torch.zeros(4, 0)
    return out
