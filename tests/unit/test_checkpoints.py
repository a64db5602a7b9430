import pytest
import torch

from dwsfusion.checkpoints import (
    TRAIN_FORMAT,
    TRAIN_STATE_FILE,
    CheckpointError,
    convert_official_state_dict,
    load_generator,
    rename_official_key,
    save_generator,
)
from dwsfusion.model import Generator, GeneratorConfig


def test_own_format_round_trips(tmp_path):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channel_min_hidden=1)).eval()
    path = save_generator(g, tmp_path / "g.pt", meta={"note": "x"})
    loaded = load_generator(path)
    assert loaded.config == g.config
    ir, vi = torch.rand(1, 1, 33, 41), torch.rand(1, 1, 33, 41)
    with torch.no_grad():
        torch.testing.assert_close(loaded.fuse(ir, vi)[0], g.fuse(ir, vi)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pt"]


def test_official_names_map_onto_ours():
    assert rename_official_key("WGet_IR.cbam2.spatial_attention.conv1.OMNI_ATT1.fc.weight") == (
        "weight_ir.att2.spatial.conv.omni_low.squeeze.weight"
    )
    assert rename_official_key("WGet_VI.conv4.upcbar.3.bias") == "weight_vi.up2.deconv2.bias"
    assert (
        rename_official_key("Fusion.conv4.FS.freq_weight_conv_list.2.weight")
        == "fusion.conv_out.freq_select.gates.2.weight"
    )
    assert rename_official_key("alphanet.fc1.weight") == "alpha.fc.weight"


def test_an_official_format_state_dict_loads_through_the_same_entry_point(tmp_path):
    """Build a release-format file from our own weights with the inverse names, then load it."""
    torch.manual_seed(0)
    g = Generator().eval()
    ours = g.state_dict()
    # Invert the mapping by brute force over the release's naming scheme.
    from tests.unit.release_names import release_state_dict

    official = release_state_dict(ours)
    assert set(convert_official_state_dict(official)) == set(ours)
    torch.save(official, tmp_path / "official.pth")
    loaded = load_generator(tmp_path / "official.pth")
    x = torch.rand(1, 1, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded.fuse(x, x)[0], g.fuse(x, x)[0])


def test_bad_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint not found"):
        load_generator(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.pt: not a loadable checkpoint"):
        load_generator(junk)
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="other.pt: neither"):
        load_generator(other)


def test_a_training_checkpoint_gives_its_best_generator_or_else_its_current_one(tmp_path):
    torch.manual_seed(0)
    current, best = Generator().state_dict(), Generator().state_dict()
    state = {"format": TRAIN_FORMAT, "generator_config": Generator().config.to_dict(), "nets": {"generator": current}}
    folder = tmp_path / "checkpoint_000"
    folder.mkdir()
    torch.save({**state, "best": {"epoch": 3, "generator": best}}, folder / TRAIN_STATE_FILE)
    for path in (folder, folder / TRAIN_STATE_FILE):  # the folder train prints, or the file in it
        loaded = load_generator(path).state_dict()
        assert all(torch.equal(loaded[k], best[k]) for k in best)
    torch.save({**state, "best": {"epoch": -1, "generator": None}}, folder / TRAIN_STATE_FILE)
    loaded = load_generator(folder).state_dict()
    assert all(torch.equal(loaded[k], current[k]) for k in current)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: checkpoint not found \(a folder without state.pt\)"):
        load_generator(tmp_path / "empty")
