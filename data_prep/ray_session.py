"""The Ray session and the console every stage shares: join the cluster at RAY_ADDRESS or
start a local Ray, and keep Ray's and MLflow's logs to what a user can act on. It sits in the
lowest layer that may touch Ray, so that prep and every stage above it import it downward;
Ray itself is imported inside the functions, so importing this module stays light."""

from __future__ import annotations

import logging
import math
import os
import sys

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
    import ray  # Ray: heavy and optional, imported on use

    if not os.environ.get("RAY_ADDRESS"):  # unset, or inherited empty
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def ensure_ray(cpus_needed: float = 0, dashboard: bool = True) -> None:
    """Join the cluster at RAY_ADDRESS, or start a local Ray with at least ``cpus_needed``
    logical CPUs (a one-worker training still needs CPUs for Ray Data's reads beside it).
    Ray Train and Tune need the dashboard's state API (Train's placement-group cleaner polls it
    every second and logs a warning each time it is missing), so only prep and batch fusion
    start a local Ray without it: its processes took ~4 % of this 2-core box's CPU."""
    import ray  # Ray: heavy and optional, imported on use

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
            kwargs["runtime_env"] = {"worker_process_setup_hook": "data_prep.ray_session.pin_ray_address"}
        ray.init(**kwargs)
    import ray.data  # Ray: heavy and optional, imported on use

    # Ray Data's bars (drawn by its coordinator actors too) help at a terminal; in a log they are
    # walls of carriage returns, so there they are off (Ray says so once per actor).
    ray.data.DataContext.get_current().enable_progress_bars = not QUIET and (VERBOSE or sys.stdout.isatty())
    quiet_libraries(VERBOSE)  # ray.data configures its logger when imported
