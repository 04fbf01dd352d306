"""Ray tasks and actors that compute use as many torch threads as the CPUs they were given."""

from __future__ import annotations

import pytest

from cdiflow.pipelines.cluster import use_assigned_cpus

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():  # an earlier test's Ray in this process: use it as it is
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20)
    yield
    ray.shutdown()


def test_threads_follow_the_task_size(local_ray):
    if ray.cluster_resources().get("CPU", 0) < 2:
        pytest.skip("the Ray of an earlier test has fewer than 2 CPUs")
    # the function itself runs remotely (a function defined here would not import there)
    one = ray.remote(num_cpus=1)(use_assigned_cpus)
    two = ray.remote(num_cpus=2)(use_assigned_cpus)
    half = ray.remote(num_cpus=0.5)(use_assigned_cpus)
    assert ray.get([two.remote(), one.remote(), half.remote(), two.remote()]) == [2, 1, 1, 2]
