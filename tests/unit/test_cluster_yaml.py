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
    # configs/quickstart.yaml has no adversarial term: a warm-up for its critics is a mistake, said.
    with pytest.raises(ConfigError, match=r"adversarial_from_epoch needs loss\.adversarial > 0"):
        load_config(WorkflowConfig, REPO / "configs" / "quickstart.yaml", ["train.adversarial_from_epoch=2"])
    warmed = ["train.adversarial_from_epoch=2", "train.loss.adversarial=0.01", "train.critic_steps=2"]
    assert load_config(WorkflowConfig, REPO / "configs" / "quickstart.yaml", warmed).train.critic_steps == 2


def test_kuberay_manifests_agree_with_the_package_the_launcher_config_and_the_docs():
    """kuberay/*.yaml parse; the RayJob's entrypoint is one of our commands with a valid config;
    image, Ray version, shared mount and home agree with the Dockerfile, pyproject.toml,
    cluster.yaml and docs/cluster.md."""
    import tomllib
    from packaging.requirements import Requirement

    import dwsfusion
    from pipelines.cli import build_parser
    from pipelines.config import load_config
    from pipelines.workflow import WorkflowConfig

    cluster = yaml.safe_load((REPO / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((REPO / "kuberay" / "rayjob.yaml").read_text())
    assert (cluster["kind"], job["kind"]) == ("RayCluster", "RayJob")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert cluster["spec"]["authOptions"]["mode"] == "token"

    entrypoint = job["spec"]["entrypoint"].split()
    assert entrypoint[0] == "dwsfusion"
    args = build_parser().parse_args(entrypoint[1:])
    workflow = load_config(WorkflowConfig, REPO / args.config, args.overrides)

    version = cluster["spec"]["rayVersion"]
    ray_requirement = next(
        Requirement(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if r.startswith("ray")
    )
    assert version in ray_requirement.specifier
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{version}-" in dockerfile
    assert f"rayproject/ray:{version}-" in (REPO / "docs" / "cluster.md").read_text()

    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    launcher = (REPO / "cluster.yaml").read_text()
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == f"dwsfusion:{dwsfusion.__version__}" and container["image"] in dockerfile
        env = {e["name"]: e["value"] for e in container["env"]}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert env["DWSFUSION_HOME"].startswith("/mnt/shared/") and mounts == {"/mnt/shared"}
        assert f"DWSFUSION_HOME={env['DWSFUSION_HOME']}" in launcher  # the VM cluster uses the same home
    assert workflow.storage.startswith("/mnt/shared/") and workflow.source.startswith("/mnt/shared/")
    gpu = cluster["spec"]["workerGroupSpecs"][0]
    assert gpu["minReplicas"] == 0 and gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_the_launcher_config_starts_every_node_with_token_authentication():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert any(target.endswith(".ray/auth_token") for target in config["file_mounts"])
