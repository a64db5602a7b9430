"""One local Ray session per test module (Ray start-up is the slow part of these tests).
A module sets ``RAY_CPUS`` for more logical CPUs (e.g. two training workers + Ray Data reads),
and ``RAY_DASHBOARD = True`` where Ray needs its state API (Ray Train's placement-group cleaner
frees the workers of a Tune trial that ASHA stopped through it)."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def ray_session(request):
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=getattr(request.module, "RAY_CPUS", 2),
        include_dashboard=getattr(request.module, "RAY_DASHBOARD", False),
        logging_level="ERROR",
    )
    yield ray
    ray.shutdown()
