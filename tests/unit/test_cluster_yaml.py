"""cluster.yaml against the cluster-launcher schema shipped inside the installed Ray, and the
configs in configs/ against the one typed workflow config."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_validates_against_rays_schema():
    ray = pytest.importorskip("ray")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["max_workers"] >= 1 and config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in c and "/home/ubuntu/dwsfusion" in c for c in config["setup_commands"])

    broken = {**config, "available_node_types": {"head": {"node_config": {}}}}  # no resources
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("name", ["quickstart.yaml", "cluster.yaml"])
def test_workflow_configs_load(name):
    from pipelines.config import load_config
    from pipelines.workflow import WorkflowConfig

    config = load_config(WorkflowConfig, REPO / "configs" / name)
    assert config.train_config("data", "storage").epochs >= 1


def test_workflow_config_errors_name_the_field():
    from pipelines.config import ConfigError, load_config
    from pipelines.workflow import WorkflowConfig

    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(WorkflowConfig, REPO / "configs" / "quickstart.yaml", ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"fuse\.actors"):
        load_config(WorkflowConfig, REPO / "configs" / "quickstart.yaml", ["fuse.actors=many"])
    with pytest.raises(ConfigError, match="set by the workflow"):
        load_config(WorkflowConfig, REPO / "configs" / "quickstart.yaml", ["train.data=x"])
