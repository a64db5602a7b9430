"""Where the workflow puts its bulky data (``data_store``), without running anything."""

from __future__ import annotations

from pathlib import Path

from pipelines.workflow import WorkflowConfig, build_steps, plan


def test_without_a_data_store_the_data_stays_in_the_step_folder(tmp_path):
    folder = tmp_path / "wf" / "steps" / "prep-abc"
    assert WorkflowConfig().data_location(folder, "patches") == str(folder / "patches")


def test_a_data_store_uri_keeps_its_scheme_and_names_workflow_and_step(tmp_path):
    folder = tmp_path / "night" / "steps" / "train-0123"
    config = WorkflowConfig(data_store="s3://bucket/prefix")
    assert config.data_location(folder, "ray") == "s3://bucket/prefix/night/train-0123/ray"


def test_a_data_store_moves_prep_and_everything_after_it_but_not_the_samples(tmp_path):
    def keys(config: WorkflowConfig) -> dict[str, str]:
        return {state.step.name: state.key for state in plan(config, Path(tmp_path))}

    plain, moved = keys(WorkflowConfig()), keys(WorkflowConfig(data_store="s3://bucket/x"))
    assert plain["samples"] == moved["samples"]
    assert all(plain[name] != moved[name] for name in ("prep", "train", "evaluate", "register", "fuse"))
    # a workflow without a data store keeps the keys it had before the setting existed
    assert "data_store" not in next(s for s in build_steps(WorkflowConfig()) if s.name == "prep").settings
