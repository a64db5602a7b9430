"""One local Ray session per test module (Ray start-up is the slow part of these tests).
A module sets ``RAY_CPUS`` for more logical CPUs (e.g. two training workers + Ray Data reads)
and ``RAY_SESSION = False`` where every Ray is a subprocess's own (tests of the command line).
The dashboard stays on: Ray Train's placement-group cleaner polls its state API every second,
and without it a missed answer can read as a dead controller and remove the workers'
placement group mid-run."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def ray_session(request):
    ray = pytest.importorskip("ray")
    if not getattr(request.module, "RAY_SESSION", True):
        yield None
        return
    ray.init(
        address="local",  # our own Ray, even where a `ray start` or a killed Cluster left one
        num_cpus=getattr(request.module, "RAY_CPUS", 2),
        include_dashboard=getattr(request.module, "RAY_DASHBOARD", True),
        logging_level="ERROR",
    )
    yield ray
    ray.shutdown()
