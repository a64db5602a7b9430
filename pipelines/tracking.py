"""MLflow runs found again by name: a resumed training run, sweep or workflow continues its
own run instead of starting a second one."""

from __future__ import annotations


def named_run(
    tracking_uri: str,
    experiment: str,
    tag: str,
    name: str,
    reuse: bool,
    parent_run_id: str | None = None,
    params: dict | None = None,
    run_name: str | None = None,
) -> str:
    """The id of the newest run tagged ``tag = name`` when ``reuse``, else of a new run with
    that tag (nested under ``parent_run_id``, with ``params`` logged)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    if reuse:
        found = mlflow.search_runs(
            filter_string=f"tags.{tag} = '{name}'", order_by=["start_time DESC"], max_results=1, output_format="list"
        )
        if found:
            return found[0].info.run_id
    tags = {tag: name}
    if parent_run_id:  # a sweep trial or a workflow step: nested under its parent in the UI
        tags["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(run_name=run_name or name, tags=tags) as run:
        if params:
            mlflow.log_params(params)
        return run.info.run_id
