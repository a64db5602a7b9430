"""What every stage shares: where results live, the MLflow store, the Ray session, the console.

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
import logging
import math
import os
import re
import sys
from pathlib import Path

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


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def location_exists(location: str) -> bool:
    """A folder or object prefix exists: a local path or any URI pyarrow reads (s3://, gs://,
    file://). The one check behind every "does this run / sweep / step exist" decision, so a
    run in object storage resumes (or refuses to start over) as a local one does."""
    import pyarrow.fs as pafs

    from data_prep.manifest import filesystem

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def store_path(value: str, setting: str) -> str:
    """A store's location: a URI as is, an absolute path as is, a relative one under ``home()``."""
    if is_uri(value):
        return value
    path = Path(value.removeprefix("file://")).expanduser()
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
    import mlflow

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
    import mlflow
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
    import mlflow

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


# ------------------------------------------------------------------ Ray and the console
VERBOSE = False  # set by the CLI's --verbose: Ray's and MLflow's own logs, per-report metrics
QUIET = False  # set by the CLI's --quiet: no progress bars


# Ray's lines that say nothing a user can act on, dropped from the console unless --verbose
# (each measured in a quickstart's output, Ray 2.60). Lines other processes send the driver go
# through Ray's documented RAY_DEDUP_LOGS_SKIP_REGEX, read when ``ray`` is imported:
RAY_NOISE = "|".join(
    (
        # Ray Core's C++ errors for its own internals: every Ray Data actor pool and Ray Train's
        # PreemptionWatcher (ray-project/ray#53727), and a kill racing a worker's exit (#58544).
        r"core_worker\.cc:\d+: Actor with class name: .* max_restarts > 0",
        r"gcs_actor_scheduler\.cc:\d+: Failed to kill actor",
        # Ray Data's coordinators, once each, when bars are off (off in a log, see ensure_ray).
        r"Progress bars disabled\. To enable",
    )
)
# ... and the driver's own log records, by logger and the start of the message:
DRIVER_NOTICES = {
    "ray.data._internal.progress": ("Progress bars disabled",),
    # The local Ray's default since 2.59; a cluster's users are told in docs/cluster.md.
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
}


class _DropNotices(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return VERBOSE or not str(record.msg).startswith(self.starts)


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the console to our own lines, progress bars and real errors unless ``verbose``:
    Ray Data's and MLflow's INFO logs, MLflow's download bars, and Ray's notices in RAY_NOISE
    and DRIVER_NOTICES. Called in the driver and again in every worker that logs to MLflow,
    since Ray and MLflow configure their loggers when they are imported."""
    level = logging.INFO if verbose else logging.WARNING
    # Environment first: a local Ray's workers inherit it, and Ray Data and MLflow read it
    # when they configure their loggers in each process.
    os.environ["RAY_DATA_LOG_LEVEL"] = logging.getLevelName(level)
    os.environ["MLFLOW_LOGGING_LEVEL"] = logging.getLevelName(level)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "true" if verbose else "false"
    if not verbose:  # a user's own pattern wins
        os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", RAY_NOISE)
    for name in ("ray.data", "ray.tune", "ray.train", "mlflow"):
        logging.getLogger(name).setLevel(level)
    for name, starts in DRIVER_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(starts))


def set_verbosity(verbose: bool, quiet: bool = False) -> None:
    global VERBOSE, QUIET
    VERBOSE, QUIET = verbose, quiet
    quiet_libraries(verbose)


def pin_ray_address() -> None:
    """Ray worker set-up hook of a local Ray: its processes' state-API calls go to this Ray.
    Without it they look for "the" local Ray, and with two on one machine (two local runs, or a
    run beside a test) Ray Train's placement-group cleaner fails, or asks the other Ray, reads
    the controller as dead and removes the placement group under a live training."""
    import ray

    if not os.environ.get("RAY_ADDRESS"):  # unset, or inherited empty
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def ensure_ray(cpus_needed: float = 0, dashboard: bool = True) -> None:
    """Join the cluster at RAY_ADDRESS, or start a local Ray with at least ``cpus_needed``
    logical CPUs (a one-worker training still needs CPUs for Ray Data's reads beside it).
    Ray Train and Tune need the dashboard's state API (Train's placement-group cleaner polls it
    every second and logs a warning each time it is missing), so only prep and batch fusion
    start a local Ray without it: its processes took ~4 % of this 2-core box's CPU."""
    import ray

    if not ray.is_initialized():
        kwargs: dict = {"logging_level": logging.INFO if VERBOSE else logging.WARNING}
        if not os.environ.get("RAY_ADDRESS"):
            # "local": a Ray of this command's own, even where `ray start` left one running
            # (a bare ray.init() would join that one, and refuse num_cpus)
            kwargs["address"] = "local"
            kwargs["num_cpus"] = max(os.cpu_count() or 1, math.ceil(cpus_needed))
            kwargs["include_dashboard"] = dashboard
            # Ray starts its workers at nice 15, below its own processes; on one machine the
            # training workers and fuse actors are the work, and at 15 anything else running
            # (a shell, a test, a second job) takes their CPU first.
            kwargs["_system_config"] = {"worker_niceness": 0}
            kwargs["runtime_env"] = {"worker_process_setup_hook": "pipelines.runtime.pin_ray_address"}
        ray.init(**kwargs)
    import ray.data

    # Ray Data's bars (drawn by its coordinator actors too) help at a terminal; in a log they are
    # walls of carriage returns, so there they are off (Ray says so once per actor).
    ray.data.DataContext.get_current().enable_progress_bars = not QUIET and (VERBOSE or sys.stdout.isatty())
    quiet_libraries(VERBOSE)  # ray.data configures its logger when imported
