"""Where runs live: the one existence check behind resume and refuse-to-overwrite decisions."""

from __future__ import annotations

from data_prep.storage import location_exists


def test_location_exists_for_folders_files_and_file_uris(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "experiment_state.json").write_text("{}")
    for present in (tmp_path / "sweep", tmp_path / "sweep" / "experiment_state.json"):
        assert location_exists(str(present)) and location_exists(present.as_uri())
    assert not location_exists(str(tmp_path / "other"))
    assert not location_exists((tmp_path / "other").as_uri())
