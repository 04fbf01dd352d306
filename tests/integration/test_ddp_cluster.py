"""DDP correctness on a 2-node ``ray.cluster_utils.Cluster`` with gloo.

Two Train workers, one per node, each take half of one fixed batch and do one SGD step
through DDP. The weights must be identical on both ranks, and equal to one serial step
on the concatenated batch (to float tolerance). BatchNorm runs in eval mode in this probe:
in train mode each rank normalises with its own half's statistics, which is not the
full-batch step, and SyncBatchNorm (which would fix that) runs only on GPUs in torch.
See ``cdiflow.pipelines.ddp_probe``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_node_cluster(no_ray_auth):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 100 * 1024 * 1024,
            "include_dashboard": False,
        },
    )
    cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_worker_step_equals_serial_step_on_concatenated_batch(two_node_cluster, tmp_path):
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from cdiflow.physics.generator import GeneratorConfig, generate_samples
    from cdiflow.pipelines.cluster import train_env_defaults
    from cdiflow.pipelines.ddp_probe import ddp_step_worker, flat_parameters, serial_step

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    samples = generate_samples(GeneratorConfig(), 11, np.arange(8))
    batch = {"modulus": samples.modulus, "amplitude": samples.amplitude, "phase": samples.phase}
    np.savez(tmp_path / "batch.npz", **batch)
    model = {"base_width": 4, "depth": 2}
    config = {
        "model": model,
        "batch": str(tmp_path / "batch.npz"),
        "seed": 5,
        "lr": 0.05,
        "out_dir": str(tmp_path),
    }
    trainer = TorchTrainer(
        ddp_step_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=2, resources_per_worker={"CPU": 1}, placement_strategy="STRICT_SPREAD"
        ),
        run_config=RunConfig(name="ddp-probe", storage_path=str(tmp_path / "runs")),
    )
    train_env_defaults()  # what run_training does before its fit()
    result = trainer.fit()
    assert result.error is None

    rank0 = np.load(tmp_path / "rank-0.npy")
    rank1 = np.load(tmp_path / "rank-1.npy")
    np.testing.assert_array_equal(rank0, rank1)  # identical across ranks after the step

    serial = flat_parameters(serial_step(model, batch, seed=5, lr=0.05))
    initial = flat_parameters(serial_step(model, batch, seed=5, lr=0.0))
    assert np.abs(serial - initial).max() > 1e-4  # the step moved the weights
    np.testing.assert_allclose(rank0, serial, rtol=1e-5, atol=1e-6)
