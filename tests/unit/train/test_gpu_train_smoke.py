"""benchmarks/gpu_train.py runs end to end on CPU with --smoke."""

from __future__ import annotations

import json
import math

import torch

import gpu_train


def test_smoke_run_writes_results(tmp_path):
    out = tmp_path / "r.json"
    weights = tmp_path / "w.pt"
    gpu_train.main(["--smoke", "--out", str(out), "--save-weights", str(weights)])
    result = json.loads(out.read_text())
    assert result["args"]["smoke"] is True
    assert len(result["history"]) >= 1
    for key in ("chi2_modulus", "chi2_amplitude", "chi2_phase"):
        assert math.isfinite(result["test"][key])
    assert result["inference_patterns_per_s"]["fp32"] > 0
    assert result["script"] == "benchmarks/gpu_train.py"  # the run's record
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
    assert weights.is_file()


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path):
    checkpoint = tmp_path / "run.pt"
    first = gpu_train.main(["--smoke", "--checkpoint", str(checkpoint), "--budget-s", "1"])
    saved = gpu_train.read_run_state(checkpoint)
    assert saved["steps"] == first["history"][-1]["steps"] > 0
    longer = str(saved["elapsed"] + 3)
    second = gpu_train.main(["--smoke", "--checkpoint", str(checkpoint), "--budget-s", longer])
    # a longer budget: the resumed run continues the same history where the first stopped
    assert second["history"][: len(first["history"])] == first["history"]
    assert second["history"][-1]["steps"] > first["history"][-1]["steps"]
    assert second["history"][-1]["seconds"] > first["history"][-1]["seconds"]
    spent = gpu_train.main(["--smoke", "--checkpoint", str(checkpoint), "--budget-s", "1"])
    assert spent["history"] == second["history"]  # no budget left: nothing more to train


def test_init_weights_starts_from_the_saved_model(tmp_path):
    weights = tmp_path / "w.pt"
    gpu_train.main(["--smoke", "--save-weights", str(weights), "--budget-s", "1"])
    args = gpu_train.parse_args(["--width", "12", "--init-weights", str(weights)])
    model, config = gpu_train.initial_model(args)
    # the architecture comes from the file (the smoke run's width 4), not from --width
    assert config.base_width == 4 and args.width == 4
    saved = gpu_train.load_weights(weights)[0].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_max_steps_stops_the_run_at_that_many_steps(tmp_path):
    result = gpu_train.main(["--smoke", "--max-steps", "3", "--budget-s", "60"])
    assert result["history"][-1]["steps"] == 3
    assert result["train_seconds"] < 60


def test_worker_patterns_join_the_stream_between_evaluations():
    """Finished chunks join inside a round of batches, not only at its end."""
    import time

    from cdiflow.physics.generator import GeneratorConfig

    args = gpu_train.parse_args(["--smoke"])
    args.workers, args.initial_patterns, args.max_patterns = 1, 16, 16 + 512
    stream = gpu_train.PatternStream(args, GeneratorConfig(), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    try:
        deadline = time.monotonic() + 120
        while stream.count == 16 and time.monotonic() < deadline:
            for _ in stream.batches(gpu_train.ABSORB_EVERY + 1, gen):
                time.sleep(0.01)  # the worker's chunk needs a moment
        assert stream.count > 16
        data = stream.data
        assert data["modulus"].shape[0] == stream.count == data["amplitude"].shape[0]
        # the appended rows are the workers' patterns, not uninitialised memory
        assert data["modulus"][16:].amax(dim=(1, 2)).min() > 0
    finally:
        stream.close()


def test_stream_append_grows_its_buffers_and_keeps_every_row():
    args = gpu_train.parse_args(["--smoke"])
    data = {"x": torch.arange(3.0).reshape(3, 1)}
    stream = gpu_train.PatternStream.from_arrays(args, data, torch.device("cpu"))
    for start in (3, 5, 12):
        stream._append({"x": torch.arange(start, start + 2.0).reshape(2, 1)})
    assert stream.count == 9
    assert stream.data["x"].flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 12, 13]


def test_a_deadline_already_past_still_gives_one_batch():
    """The budget check and the first batch are not atomic: an empty round would crash."""
    args, data = gpu_train.parse_args(["--smoke"]), {"x": torch.arange(8.0).reshape(8, 1)}
    stream = gpu_train.PatternStream.from_arrays(args, data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    assert len(list(stream.batches(5, gen, deadline=0.0))) == 1
    assert len(list(stream.batches(5, gen))) == 5
