"""A 4-trial sweep on tiny shards: ASHA stops the trials that are worse at the first rung,
every trial is an MLflow run nested under the sweep's parent, the best config comes back,
and a finished sweep resumes as a no-op. One Ray session for the module."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from data_prep import PrepConfig, run_prep  # noqa: E402
from dwsfusion.samples import write_samples  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from tune import SweepConfig, run_sweep  # noqa: E402
from tune.sweep import Dimension  # noqa: E402

RAY_CPUS = 3  # one training worker, the trial driver, Ray Data reads
RAY_DASHBOARD = True  # the state API, through which Ray Train frees a stopped trial's workers


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    write_samples(root / "src", count=5, seed=3)
    run_prep(
        PrepConfig(source=str(root / "src"), out=str(root / "patches"), patch_size=161, stride=40, val_fraction=0.4),
        log=lambda *_: None,
    )
    train = TrainConfig(
        data=str(root / "patches"),
        num_workers=1,
        epochs=2,
        batch_size=4,
        max_steps_per_epoch=3,
        materialize=True,
        shuffle_buffer=0,
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_experiment="sweep-test",
    )
    # Forced ASHA stops: one trial at a time in grid order (lr_g 1e-2, 1e-12, 1e-2, 1e-12),
    # each run seeded, so both 1e-2 trials score the same. At the first rung a 1e-12 trial
    # (its generator does not move from the random start) is below the median of the scores
    # recorded so far and is stopped; the second 1e-2 trial ties the best and goes on.
    config = SweepConfig(
        train=train,
        space={
            "lr_g": Dimension(type="grid", values=[1e-2, 1e-12]),
            "loss.dual_ir": Dimension(type="choice", values=[1.5]),
        },
        name="tiny",
        storage_path=str(root / "tune"),
        num_samples=2,
        max_concurrent=1,
        grace_period=1,
        reduction_factor=2,
    )
    return config, run_sweep(config)


def test_asha_stops_the_worse_trials_and_the_best_comes_back(sweep):
    config, result = sweep
    print("\n" + "\n".join(str(row) for row in result.table))
    assert len(result.table) == 4
    by_lr = {}
    for row in result.table:
        by_lr.setdefault(row["lr_g"], []).append(row)
    assert all(r["status"] == "stopped early" and r["epochs"] == 1 for r in by_lr[1e-12])
    assert any(r["status"] == "completed" and r["epochs"] == 2 for r in by_lr[1e-2])
    assert result.best_params["lr_g"] == 1e-2
    assert result.best_config.lr_g == 1e-2 and result.best_config.loss.dual_ir == result.best_params["loss.dual_ir"]
    assert result.best_score == max(r["best_val_score"] for r in result.table)


def test_every_trial_is_nested_under_the_sweep_run(sweep):
    config, result = sweep
    client = mlflow.MlflowClient(config.train.tracking_uri())
    children = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
        output_format="list",
    )
    assert len(children) == 4 and {r.info.run_id for r in children} == {r["mlflow_run_id"] for r in result.table}
    assert all("val_score" in r.data.metrics and "loss.dual_ir" in r.data.params for r in children)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"trials.csv", "objective_vs_coefficients.png", "best_params.json"} <= artifacts
    assert client.get_run(result.parent_run_id).data.tags["best_run_id"] == result.best_run_id


def test_a_finished_sweep_resumes_as_a_no_op(sweep):
    config, result = sweep
    again = run_sweep(config, resume=True)
    assert again.best_params == result.best_params and again.parent_run_id == result.parent_run_id
    with pytest.raises(ValueError, match="exists"):
        run_sweep(config)
