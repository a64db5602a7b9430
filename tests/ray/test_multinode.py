"""Beyond one machine, on one machine: a Ray cluster of a head and worker nodes on this box
(``ray.cluster_utils.Cluster``), each node with its own CPUs and a node resource, so that work is
forced across nodes, and nodes removed mid-run.

- training with two workers on two nodes (STRICT_SPREAD): ranks identical, checkpoints on
  storage every node sees;
- a Tune sweep whose two concurrent trials train on different nodes;
- a node of a training run removed after a checkpoint, a spare node present, ``max_failures``
  1: training restarts from the last checkpoint on the nodes left and finishes, no epoch lost
  or repeated;
- batch fusion with actors on two nodes writing one output; then a node removed mid-run: the
  lost actor's pairs are fused by the others, nothing duplicated or half-written, the manifest
  counts right;
- the same with no shared path: archive shards in an S3 bucket (moto's server on loopback, set
  in every node's environment), fused shards and Parquet tables written back to it, a node
  removed mid-run, every pair fused exactly once and no temporary object left;
- a workflow whose training node is removed (no retries): it fails, a spare node joins, and
  ``dwsfusion pipeline resume`` finishes it, training continuing from its last checkpoint.

What was removed, when, and what survived is recorded (a JSON file: $DWSFUSION_DRILL_RECORD,
else the test's temporary folder; ``python benchmarks/node_loss.py`` keeps it in
benchmarks/results/node_loss.json)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("mlflow")

from ray.cluster_utils import Cluster  # noqa: E402

from data_prep import PrepConfig, run_prep  # noqa: E402
from dwsfusion.samples import write_samples  # noqa: E402
from pipelines.batch.run import MANIFEST, FuseJob, batch_fuse  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from pipelines.train import load_inputs, load_train_state, run_training  # noqa: E402

RAY_SESSION = False  # the module runs its own multi-node cluster
# About five minutes of simulated nodes: not in the default suite, but ``make test``
# (and so CI) runs them after it (docs/testing.md).
pytestmark = pytest.mark.multinode


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    events: list[dict] = []
    yield events
    path = Path(os.environ.get("DWSFUSION_DRILL_RECORD") or tmp_path_factory.mktemp("drills") / "node_loss.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"drills": events}, indent=2) + "\n")


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server, in this process's environment before the nodes start (their workers
    inherit it, as a real cluster's nodes get the variables from their setup)."""
    pytest.importorskip("moto")
    from tests.ray.servers import moto_s3, s3_client

    saved = dict(os.environ)
    with moto_s3() as env:
        os.environ.update(env)
        s3_client(env).create_bucket(Bucket="drill")
        yield env
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def cluster(s3):
    """A head without CPUs for work and two worker nodes: 'a' and 'b' (2 CPUs, one 'train'
    slot each). Tests add spare nodes and remove nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    nodes = {name: cluster.add_node(num_cpus=2, resources={"train": 1, f"node_{name}": 1}) for name in "ab"}
    ray.init(address=cluster.address, logging_level="ERROR")
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    write_samples(root / "src", count=5, seed=3)
    config = PrepConfig(
        source=str(root / "src"), out=str(root / "patches"), patch_size=161, stride=60, val_fraction=0.4
    )
    return root, config


def _config(root: Path, name: str, **settings) -> TrainConfig:
    return TrainConfig(
        data=str(root / "patches"),
        storage_path=str(root / "storage"),  # one folder: storage every node of this box sees
        name=name,
        num_workers=2,
        cpus_per_worker=1,
        placement_strategy="STRICT_SPREAD",
        worker_resources={"train": 1},  # only the nodes with a training slot
        batch_size=4,
        max_steps_per_epoch=2,
        lr_g=1e-3,
        lr_d=1e-3,
        materialize=True,
        val_images=2,
        bn_recalibration_batches=1,
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        **settings,
    )


def test_two_training_workers_on_two_nodes_stay_identical(cluster, patches):
    root, prep = patches
    run_prep(prep, log=lambda *_: None)
    result = run_training(_config(root, "spread", epochs=2), progress=False)
    state = load_train_state(result.checkpoint)
    last = state["history"][-1]
    assert last["nodes"] == 2.0 and last["ranks_identical"] == 1.0 and last["rank_parameter_spread"] == 0.0
    assert Path(result.checkpoint).is_relative_to(root / "storage")


def test_two_sweep_trials_train_on_different_nodes(cluster, patches, record):
    """Two concurrent trials, each with one training worker that needs a node's only 'train'
    slot: Tune and Ray Train place them on nodes a and b, and each trial's MLflow run names the
    node it trained on (tag ``ray_nodes``)."""
    import mlflow

    from tune.sweep import Dimension, SweepConfig, run_sweep

    root, prep = patches
    if not (root / "patches").exists():
        run_prep(prep, log=lambda *_: None)
    train = _config(root, "unused", epochs=1).model_copy(update={"num_workers": 1, "placement_strategy": "PACK"})
    sweep = SweepConfig(
        train=train,
        space={"lr_g": Dimension(type="grid", values=[1e-3, 2e-3])},
        name="two-nodes",
        storage_path=str(root / "tune"),
        num_samples=1,
        max_concurrent=2,
        scheduler="fifo",
    )
    result = run_sweep(sweep, progress=False)
    mlflow.set_tracking_uri(train.mlflow_tracking_uri)
    nodes = [mlflow.get_run(row["mlflow_run_id"]).data.tags["ray_nodes"] for row in result.table]
    assert len(nodes) == 2 and all("," not in n for n in nodes), nodes
    assert nodes[0] != nodes[1], f"both trials trained on node {nodes[0]}"
    record.append(
        {
            "drill": "a Tune sweep: 2 concurrent trials, one worker each, one 'train' slot per node",
            "removed": "nothing",
            "survived": f"trials trained on nodes {', '.join(n[:12] for n in nodes)}",
        }
    )


def test_read_once_patches_live_on_the_driver_node(cluster, patches):
    """The patches training reads once (val always, train with ``materialize``) must survive
    the loss of a worker node: every block's copies include the driver's node. Blocks left
    where read tasks on nodes a and b made them are what made the node-loss drill below flaky."""
    root, prep = patches
    if not (root / "patches").exists():
        run_prep(prep, log=lambda *_: None)
    train_data, val_data, _ = load_inputs(_config(root, "unused"))
    driver_node = ray.get_runtime_context().get_node_id()
    for name, dataset in (("train", train_data), ("val", val_data)):
        refs = dataset.to_arrow_refs()
        locations = ray.experimental.get_object_locations(refs)
        elsewhere = [ref for ref in refs if driver_node not in locations[ref]["node_ids"]]
        assert refs and not elsewhere, f"{len(elsewhere)} of {len(refs)} {name} blocks only on worker nodes"


def test_a_lost_node_restarts_training_from_its_last_checkpoint(cluster, patches, record):
    head, nodes = cluster
    root, _ = patches
    config = _config(root, "loss", epochs=5, max_failures=1)
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=run_training(config, progress=False)))
    started = time.time()
    worker.start()
    run_dir = root / "storage" / "loss"
    while time.time() - started < 600 and not list(run_dir.glob("checkpoint_*")):
        time.sleep(0.5)
    spare = head.add_node(num_cpus=2, resources={"train": 1, "node_c": 1})
    checkpoints_before = sorted(p.name for p in run_dir.glob("checkpoint_*"))
    killed_at = time.time() - started
    head.remove_node(nodes["a"])  # a training worker's node: the worker group fails
    worker.join(timeout=900)
    assert "result" in outcome, "training did not finish after the node was lost"
    state = load_train_state(outcome["result"].checkpoint)
    epochs = [h["epoch"] for h in state["history"]]
    assert epochs == list(range(5)), epochs  # none lost, none repeated
    assert state["history"][-1]["ranks_identical"] == 1.0
    record.append(
        {
            "drill": "training, 2 workers (STRICT_SPREAD), max_failures 1, a spare node added",
            "removed": "node a (one training worker)",
            "removed_after_s": round(killed_at, 1),
            "checkpoints_before": checkpoints_before,
            "survived": f"training finished on nodes b and c: epochs {epochs}, ranks identical",
        }
    )
    nodes["c"] = spare


def test_fuse_actors_on_two_nodes_write_one_output_and_survive_a_lost_node(
    cluster, tmp_path, random_checkpoint, record, monkeypatch
):
    head, nodes = cluster
    # The drill loses a node whose actor is at work: Ray Data dispatches no pair until both
    # actors are up (else one actor may fuse all 24 small pairs while the other still starts).
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 120)
    source = write_samples(tmp_path / "src", count=24, seed=5, sizes=((161, 200),))
    job = FuseJob(
        input=str(source),
        output=str(tmp_path / "out"),
        checkpoint=str(random_checkpoint),
        actors=2,
        cpus_per_actor=2,
        metrics=("Qabf", "VIF", "SSIM", "Nabf"),
    )
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=batch_fuse(job, progress=False)))
    started = time.time()
    worker.start()
    rows = tmp_path / "out" / ".rows"

    def fused_on() -> set[str]:  # the nodes that have written a done pair's row so far
        found = set()
        for row in rows.glob("*.json"):
            try:
                found.add(json.loads(row.read_text())["node"])
            except (OSError, ValueError, KeyError):  # a row renamed into place while listed
                continue
        return found

    # The node is removed once each actor has fused a pair.
    while time.time() - started < 300 and worker.is_alive() and len(fused_on()) < 2:
        time.sleep(0.2)
    assert len(fused_on()) >= 2, f"the pairs were fused on one node only: {fused_on()}"
    victim = next(name for name in ("b", "c") if name in nodes)
    done_before = len(list(rows.glob("*.json")))
    spare = head.add_node(num_cpus=2, resources={"node_d": 1})
    head.remove_node(nodes.pop(victim))
    killed_at = time.time() - started
    worker.join(timeout=600)
    assert "result" in outcome, "batch fusion did not finish after the node was lost"
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["counts"]["pairs"] == manifest["counts"]["fused"] == 24 and manifest["counts"]["failed"] == 0
    pngs = sorted(p.stem for p in (tmp_path / "out").glob("*.png"))
    assert pngs == sorted(p.stem for p in (source / "ir").iterdir())  # each pair once
    assert not list((tmp_path / "out").glob(".*.tmp")) and not list((tmp_path / "out").glob("*.tmp"))
    assert len(manifest["nodes"]) >= 2  # the manifest counts the pairs of each node
    record.append(
        {
            "drill": "batch fusion, 2 actors of 2 CPUs (one per node), 24 pairs",
            "removed": f"node {victim} (one fuse actor)",
            "removed_after_s": round(killed_at, 1),
            "pairs_done_before": done_before,
            "survived": f"all 24 pairs fused once; pairs per node {manifest['nodes']}",
        }
    )
    nodes["d"] = spare


def test_shards_from_a_bucket_to_a_bucket_survive_a_lost_node(
    cluster, s3, tmp_path, random_checkpoint, record, monkeypatch
):
    """No shared path for the data: six shards in s3://drill/in/, two actors on two nodes stream
    them and write fused shards and Parquet tables to s3://drill/out/; a node is removed once
    a shard is done. Every pair ends up fused exactly once, in its own shard's output."""
    import pyarrow.parquet as pq

    from tests.ray.servers import s3_client

    head, nodes = cluster
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 120)
    source = write_samples(tmp_path / "src", count=8, seed=6, sizes=((241, 321),))
    stems = sorted(p.stem for p in (source / "ir").iterdir())
    client, expected = s3_client(s3), {}
    for shard in range(6):
        archive = tmp_path / f"night-{shard}.tar"
        with tarfile.open(archive, "w") as packed:
            for stem in stems:
                packed.add(source / "ir" / f"{stem}.png", f"s{shard}-{stem}.ir.png")
                packed.add(source / "vi" / f"{stem}.png", f"s{shard}-{stem}.vi.png")
        client.upload_file(str(archive), "drill", f"in/night-{shard}.tar")
        expected[f"night-{shard}"] = [f"s{shard}-{stem}" for stem in stems]
    job = FuseJob(
        input="s3://drill/in/",
        output="s3://drill/out/",
        checkpoint=str(random_checkpoint),  # on a cluster: --model models:/NAME@ALIAS from the registry
        actors=2,
        cpus_per_actor=2,
        metrics=("Qabf", "SSIM"),
    )
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=batch_fuse(job, progress=False)))
    started = time.time()
    worker.start()

    def done_shards() -> list[str]:
        listing = client.list_objects_v2(Bucket="drill", Prefix="out/").get("Contents", [])
        return [o["Key"] for o in listing if o["Key"].endswith(".tar")]

    while time.time() - started < 300 and worker.is_alive() and not done_shards():
        time.sleep(0.2)
    done_before = done_shards()
    assert done_before and worker.is_alive(), "no shard done while the run went on"
    victim = next(name for name in ("c", "d") if name in nodes)  # both 2-CPU worker nodes hold an actor
    spare = head.add_node(num_cpus=2, resources={"node_e": 1})
    head.remove_node(nodes.pop(victim))
    killed_at = time.time() - started
    worker.join(timeout=600)
    assert "result" in outcome, "batch fusion did not finish after the node was lost"
    manifest = outcome["result"].manifest
    assert manifest["status"] == "finished" and manifest["counts"]["shards"] == 6
    assert manifest["counts"]["pairs"] == manifest["counts"]["fused"] == 48 and manifest["counts"]["failed"] == 0
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="drill", Prefix="out/")["Contents"])
    assert not [k for k in keys if ".tmp-" in k], "temporary objects left"
    for name, pairs in expected.items():
        body = client.get_object(Bucket="drill", Key=f"out/{name}.tar")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            assert tar.getnames() == [f"{key}.fused.png" for key in pairs]  # each pair once, in order
        table = pq.read_table(
            io.BytesIO(client.get_object(Bucket="drill", Key=f"out/metrics/{name}.parquet")["Body"].read())
        )
        assert table.column("key").to_pylist() == pairs and table.column("error").null_count == len(pairs)
    record.append(
        {
            "drill": "batch fusion from s3:// to s3://, 6 shards of 8 pairs, 2 actors of 2 CPUs (one per node)",
            "removed": f"node {victim} (one fuse actor)",
            "removed_after_s": round(killed_at, 1),
            "shards_done_before": len(done_before),
            "survived": f"all 48 pairs fused once into their shards' outputs; pairs per node {manifest['nodes']}",
        }
    )
    nodes["e"] = spare


def test_a_workflow_that_lost_its_training_node_finishes_with_pipeline_resume(cluster, tmp_path, record):
    """The workflow's training worker runs on the only node with a 'wf' slot, with no retries:
    removing that node fails the run. A spare node joins, ``dwsfusion pipeline resume`` reruns
    the steps without a completion marker, training continues from its last checkpoint (no
    epoch lost or repeated), and evaluation, registration and fusion follow."""
    from pipelines.cli import main
    from pipelines.workflow import WorkflowConfig, plan, run_workflow

    head, _ = cluster
    first_node = head.add_node(num_cpus=2, resources={"wf": 1})
    head.wait_for_nodes()
    config = WorkflowConfig.model_validate(
        {
            "name": "lost",
            "storage": str(tmp_path / "workflows"),
            "samples": {"count": 5, "seed": 3},
            "prep": {"patch_size": 161, "stride": 60, "val_fraction": 0.4},
            "train": {
                "num_workers": 1,
                "cpus_per_worker": 1,
                "worker_resources": {"wf": 1},
                "max_failures": 0,
                "epochs": 4,
                "batch_size": 4,
                "max_steps_per_epoch": 2,
                "lr_g": 1e-3,
                "lr_d": 1e-3,
                "materialize": True,
                "val_images": 2,
                "bn_recalibration_batches": 1,
            },
            "registry": {"name": "lost-node"},
            "fuse": {"actors": 1, "metrics": []},
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    outcome: dict = {}

    def first_run() -> None:
        try:
            run_workflow(config, log=lambda *_: None, progress=False)
        except Exception as exc:  # noqa: BLE001 - the failure is what this test waits for
            outcome["error"] = exc

    worker = threading.Thread(target=first_run)
    started = time.time()
    worker.start()
    steps = tmp_path / "workflows" / "lost" / "steps"

    def checkpoints() -> list[Path]:  # folders only: Ray keeps a checkpoint_manager_snapshot.json beside them
        return sorted(p for p in steps.glob("train-*/ray/*/checkpoint_*") if p.is_dir())

    while time.time() - started < 600 and not checkpoints():
        time.sleep(0.5)
    checkpoints_before = [p.name for p in checkpoints()]
    assert checkpoints_before, "no training checkpoint within 10 minutes"
    killed_at = time.time() - started
    head.remove_node(first_node)  # the training worker's node: the run fails (max_failures 0)
    worker.join(timeout=600)
    assert "error" in outcome, "the workflow did not fail when its training node was lost"
    head.add_node(num_cpus=2, resources={"wf": 1})  # a spare node for the resumed training
    head.wait_for_nodes()
    assert main(["pipeline", "resume", "lost", "--storage", str(tmp_path / "workflows"), "--quiet"]) == 0
    states = plan(config, tmp_path / "workflows" / "lost")
    assert all(state.done for state in states), [(s.step.name, s.done) for s in states]
    latest = checkpoints()[-1]
    epochs = [h["epoch"] for h in load_train_state(str(latest))["history"]]
    assert epochs == list(range(4)), epochs  # none lost, none repeated
    record.append(
        {
            "drill": "workflow, training on the only 'wf' node, max_failures 0",
            "removed": "the training worker's node",
            "removed_after_s": round(killed_at, 1),
            "checkpoints_before": checkpoints_before,
            "failed_with": type(outcome["error"]).__name__,
            "survived": f"`dwsfusion pipeline resume` finished every step; training epochs {epochs}",
        }
    )
