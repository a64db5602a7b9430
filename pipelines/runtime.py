"""What the stages share above data prep: where results live and the MLflow store (the Ray
session and the console are ``data_prep.ray_session``; locations are ``data_prep.storage``).

**Where results live.** The stores (workflow ``storage``, training and sweep ``storage_path``,
the default MLflow store ``runs/mlflow.db``) resolve a relative path against one home:
``$DWSFUSION_HOME`` when set, else the directory the command started in. Inside a Ray job
(``ray job submit``) the command starts in Ray's temporary copy of ``--working-dir``, which
Ray deletes: there a relative store, and any relative output path, is refused before any work
starts unless ``DWSFUSION_HOME`` is set. Inputs (config files, source folders) stay relative
to the current directory, which is what ``--working-dir`` is for.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from data_prep.storage import is_uri, local_path
from dwsfusion.errors import UsageError

HOME_VARIABLE = "DWSFUSION_HOME"
DEFAULT_TRACKING_STORE = "runs/mlflow.db"
# Ray sets this in the environment of a job's entrypoint (ray job submit).
RAY_JOB_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"


# ------------------------------------------------------------------ paths
def in_ray_job() -> bool:
    return RAY_JOB_VARIABLE in os.environ


def _job_working_dir() -> str:
    try:
        return json.loads(os.environ[RAY_JOB_VARIABLE])["runtime_env"].get("working_dir") or "(none)"
    except (KeyError, ValueError, TypeError, AttributeError):
        return "(unknown)"


def home() -> Path:
    """The folder relative stores resolve against (see the module docstring)."""
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser().resolve()
    return Path.cwd()


def store_path(value: str, setting: str) -> str:
    """A store's location: a URI as is, an absolute path as is, a relative one under ``home()``."""
    if is_uri(value):
        return value
    path = Path(local_path(value)).expanduser()
    if path.is_absolute():
        return str(path)
    if in_ray_job() and not os.environ.get(HOME_VARIABLE):
        raise UsageError(
            f"{setting}={value!r} is relative, and this runs inside a Ray job whose working directory "
            f"({Path.cwd()}, Ray's copy of working_dir {_job_working_dir()}) is deleted after the job: set "
            f"{HOME_VARIABLE} to a persistent folder (ray job submit --runtime-env-json "
            f'\'{{"env_vars": {{"{HOME_VARIABLE}": "/path"}}}}\') or give {setting} as an absolute path or URI'
        )
    return str(home() / path)


def output_path(value: str | os.PathLike, option: str) -> Path:
    """An output path given on the command line: relative to the current directory, except in
    a Ray job, where it goes under ``$DWSFUSION_HOME`` or is refused. A URI is refused by name
    (``Path`` would fold ``s3://b`` into a local folder ``s3:/b``); verbs that write to object
    storage take ``output_location``."""
    if is_uri(str(value)):
        raise UsageError(f"{option} {value}: this command writes local files only; give a folder path")
    path = Path(value).expanduser()
    if path.is_absolute() or not in_ray_job():
        return path
    return Path(store_path(str(path), option))


def output_location(value: str, option: str) -> str:
    """``output_path`` for a verb whose output may be a URI: a URI is returned as given."""
    return value if is_uri(value) else str(output_path(value, option))


# ------------------------------------------------------------------ MLflow
def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow store: ``explicit``, else $MLFLOW_TRACKING_URI, else SQLite in the home's
    ``runs/mlflow.db``. Only names it: nothing is created (see ``use_tracking``)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store_path(DEFAULT_TRACKING_STORE, 'the MLflow store (mlflow_tracking_uri)')}"


def use_tracking(uri: str) -> None:
    """Point MLflow at ``uri``, creating a SQLite file's folder first."""
    import mlflow  # MLflow: heavy and optional, imported on use

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)


ARTIFACTS_FOLDER = "mlartifacts"  # beside a SQLite store: runs/mlflow.db -> runs/mlartifacts


def artifact_root(uri: str, configured: str | None = None) -> str | None:
    """Where a new experiment of store ``uri`` keeps its artifacts: ``configured`` (a config's
    ``mlflow_artifact_location``; relative: under the home), else, for a SQLite store, the folder
    ``mlartifacts`` beside its file, so that moving or cleaning ``runs/`` keeps the database and
    the artifacts it points to together (MLflow's own default is ``./mlruns`` of whatever folder
    the command started in). None: the tracking server's or file store's own choice."""
    if configured:
        return store_path(configured, "mlflow_artifact_location")
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).resolve().parent / ARTIFACTS_FOLDER)
    return None


def set_experiment(uri: str, name: str, artifact_location: str | None = None):
    """Make ``name`` the active experiment of store ``uri``, creating it with its artifacts under
    ``artifact_root`` when it does not exist yet (an existing experiment keeps its own)."""
    import mlflow  # MLflow: heavy and optional, imported on use
    from mlflow.exceptions import MlflowException

    use_tracking(uri)
    root = artifact_root(uri, artifact_location)
    if root is not None and mlflow.get_experiment_by_name(name) is None:
        folder = re.sub(r"[^\w.-]", "_", name)
        try:
            mlflow.create_experiment(name, artifact_location=f"{root.rstrip('/')}/{folder}")
        except MlflowException:  # created meanwhile by a concurrent run: that one is used
            pass
    return mlflow.set_experiment(name)


def how_to_see(uri: str) -> str:
    """What to run or open to see the runs of ``uri``."""
    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {uri} (the tracking server serves the UI)"
    return f"mlflow ui --backend-store-uri {uri}"


def named_run(
    uri: str,
    experiment: str,
    tag: str,
    name: str,
    reuse: bool,
    parent_run_id: str | None = None,
    params: dict | None = None,
    run_name: str | None = None,
    artifact_location: str | None = None,
) -> str:
    """The id of the newest run tagged ``tag = name`` when ``reuse``, else of a new run with
    that tag (nested under ``parent_run_id``, with ``params`` logged). A resumed training
    run, sweep or workflow continues its own run instead of starting a second one."""
    import mlflow  # MLflow: heavy and optional, imported on use

    set_experiment(uri, experiment, artifact_location)
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
