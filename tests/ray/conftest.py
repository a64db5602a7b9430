"""One local Ray session per test module (Ray start-up is the slow part of these tests).
A module sets ``RAY_CPUS`` for more logical CPUs (e.g. two training workers + Ray Data reads)."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def ray_session(request):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=getattr(request.module, "RAY_CPUS", 2), include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
