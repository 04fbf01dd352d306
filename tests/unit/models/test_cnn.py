"""The CNN: shapes, output ranges, config checks, BN folding, FLOP counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cdiflow.errors import ConfigError
from cdiflow.losses import LossWeights, physics_loss
from cdiflow.models import (
    ModelConfig,
    build_model,
    count_flops,
    count_parameters,
    fold_batchnorm,
    inference_model,
    training_layout,
)


def _model(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**kw))


def _inputs(batch: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [{"base_width": 4}, {"base_width": 4, "depth": 2}, {"depth": 1}])
def test_output_shape_for_both_input_layouts(kw):
    model = _model(**kw).eval()
    x = _inputs(3)
    with torch.no_grad():
        out = model(x)
        out4 = model(x.unsqueeze(1))
    assert out.shape == (3, 2, 32, 32)
    assert torch.equal(out, out4)


@pytest.mark.parametrize("activation", ["relu_clamp", "sigmoid", "relu"])
def test_output_range(activation):
    model = _model(base_width=4, output_activation=activation).train()
    with torch.no_grad():  # large weights push the head far beyond [0, 1]
        for p in model.parameters():
            p.mul_(5)
        out = model(_inputs(4) * 10)
    assert out.min() >= 0
    if activation != "relu":
        assert out.max() <= 1
    else:
        assert out.max() > 1  # the paper's plain ReLU is unbounded above


@pytest.mark.parametrize(
    "bad",
    [
        {"base_width": 0},
        {"depth": 0},
        {"depth": 7},  # 64 is not a multiple of 128
        {"output_size": 16},
        {"leaky_slope": 1.5},
        {"output_activation": "tanh"},
        {"bn_momentum": 0.0},
        {"phase_head": "cosine"},
        {"phase_gate": 1.0},
        {"phase_gate_width": 0.3},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**bad)


def test_config_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="width"):
        ModelConfig.from_dict({"width": 8})
    assert ModelConfig.from_dict({"base_width": 8}).base_width == 8


def _trained_bn_model() -> nn.Module:
    """A model whose BN layers hold non-trivial statistics and affine parameters."""
    model = _model(base_width=6)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 2 - 0.5)  # some < 0
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
        model.train()
        for _ in range(3):
            model(_inputs(8, seed=int(torch.randint(100, (1,), generator=gen))) * 2)
    return model.eval()


def test_inference_model_matches_eval_model_and_leaves_original():
    model = _trained_bn_model()
    x = _inputs(5, seed=7)
    with torch.no_grad():
        expected = model(x)
        fast = inference_model(model)
        got = fast(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))
        got_plain = fast(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    assert not any(p.requires_grad for p in fast.parameters())
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got_plain, expected, atol=2e-5, rtol=1e-4)


def _train_steps(model: nn.Module, steps: int = 3) -> list[float]:
    """Losses of ``steps`` AdamW steps on fixed random batches (float64: no rounding to
    hide behind)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(steps):
        x = torch.rand(4, 64, 64, generator=g, dtype=torch.float64)
        amp = torch.rand(4, 32, 32, generator=g, dtype=torch.float64)
        phase = torch.rand(4, 32, 32, generator=g, dtype=torch.float64)
        loss = physics_loss(model(x), x, amp, phase, LossWeights(twin_invariant=True))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_layout_trains_the_same_model_in_channels_last():
    plain = _model(seed=4, base_width=4, depth=2).double()
    fast = training_layout(_model(seed=4, base_width=4, depth=2).double())
    convs = [m.weight for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # some 3x3 weights really moved
    torch.testing.assert_close(_train_steps(fast), _train_steps(plain), rtol=1e-9, atol=0)
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=name)


def test_fold_batchnorm_in_place_is_exact_in_float64():
    model = _trained_bn_model().double()
    x = _inputs(2, seed=9).double()
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_flops_and_parameters_match_hand_count():
    # depth 1, width w: block(1->w)@64, pool, block(w->2w)@32, split into two w-channel
    # halves, each head 3x3 (w->1)@32.
    w = 4
    model = _model(base_width=w, depth=1)
    macs = 64 * 64 * (9 * 1 * w + 3 * w * w + 3 * w * w)
    macs += 32 * 32 * (9 * w * 2 * w + 2 * 3 * (2 * w) ** 2)
    macs += 2 * 32 * 32 * 9 * w
    assert count_flops(model) == 2 * macs
    convs = 9 * w + 6 * w * w + 9 * w * 2 * w + 6 * (2 * w) ** 2 + 2 * (9 * w + 1)
    bn = 2 * (2 * w + 2 * 2 * w)
    assert count_parameters(model) == convs + bn


def test_default_model_cost_is_documented():
    model = build_model()
    assert 0.12e9 < count_flops(model) < 0.14e9
    assert 0.28e6 < count_parameters(model) < 0.30e6


def test_dead_output_channel_still_gets_a_gradient():
    model = _model(base_width=4)
    with torch.no_grad():  # push both heads far below 0: ReLU / clamp are flat there
        model.amplitude_decoder[-1].bias.fill_(-10.0)
        model.phase_decoder[-1].bias.fill_(-10.0)
    out = model(_inputs(2))
    assert out.abs().max() == 0  # the value is the clamp's
    out.sum().backward()
    assert model.phase_decoder[-1].bias.grad.item() > 0
    paper = _model(base_width=4, output_gradient_leak=0.0)
    with torch.no_grad():
        paper.phase_decoder[-1].bias.fill_(-10.0)
    paper(_inputs(2)).sum().backward()
    assert paper.phase_decoder[-1].bias.grad.item() == 0


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model(ModelConfig(base_width=4), seed=3)
    b = build_model(ModelConfig(base_width=4), seed=3)
    c = build_model(ModelConfig(base_width=4), seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_with_mask_channel_answers_as_the_source_until_trained():
    from cdiflow.models.cnn import with_mask_channel

    source = build_model(ModelConfig(base_width=4, depth=2), seed=3).eval()
    widened = with_mask_channel(source).eval()
    assert widened.config.mask_channel and not source.config.mask_channel
    gen = torch.Generator().manual_seed(0)
    modulus = torch.rand(3, 64, 64, generator=gen)
    mask = torch.rand(3, 64, 64, generator=gen) > 0.3
    with torch.no_grad():
        expected = source(modulus)
        assert torch.equal(widened(modulus, mask), expected)
    # the new channel is a real input: a gradient reaches its weights
    widened.train()
    widened(modulus, mask).sum().backward()
    grad = widened.encoder[0][0].convs[0].weight.grad[:, 1]
    assert grad.abs().sum() > 0
    assert with_mask_channel(widened) is widened


def test_widened_answers_as_the_source_and_is_wider():
    from cdiflow.models.cnn import widened
    from cdiflow.models.flops import count_parameters

    source = build_model(ModelConfig(base_width=4, depth=2, mask_channel=True), seed=3)
    gen = torch.Generator().manual_seed(0)
    modulus = torch.rand(4, 64, 64, generator=gen)
    mask = torch.rand(4, 64, 64, generator=gen) > 0.3
    source.train()
    source(modulus, mask)  # move BN running stats off their defaults
    source.eval()
    wide = widened(source, 2).eval()
    assert wide.config.base_width == 8 and wide.config.mask_channel
    assert count_parameters(wide) > 3 * count_parameters(source)
    with torch.no_grad():
        torch.testing.assert_close(wide(modulus, mask), source(modulus, mask))
        # train-mode BN (batch statistics) agrees too
        torch.testing.assert_close(wide.train()(modulus, mask), source.train()(modulus, mask))


def test_widened_noise_breaks_the_copies_tie_but_stays_close():
    from cdiflow.models.cnn import widened

    source = build_model(ModelConfig(base_width=4, depth=2), seed=3).eval()
    modulus = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    exact = widened(source, 2)
    noisy = widened(source, 2, noise=0.01, generator=torch.Generator().manual_seed(2))
    w_exact = exact.encoder[0][0].convs[0].weight
    w_noisy = noisy.encoder[0][0].convs[0].weight
    assert torch.equal(w_exact[0], w_exact[1])  # copies are copies
    assert not torch.equal(w_noisy[0], w_noisy[1])
    with torch.no_grad():
        gap = (noisy.eval()(modulus) - source(modulus)).abs().max()
    assert 0 < gap < 0.05
    again = widened(source, 2, noise=0.01, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.encoder[0][0].convs[0].weight, w_noisy)
    with pytest.raises(ConfigError):
        widened(source, 0)


def test_angle_head_gives_a_phase_target_gated_by_the_amplitude():
    model = _model(base_width=4, depth=2, phase_head="angle").train()
    with torch.no_grad():  # amplitudes on both sides of the gate
        head = model.amplitude_decoder[-1]
        head.weight.mul_(30)
        head.bias.fill_(model.config.phase_gate)
        out = model(_inputs(4) * 10)
    amp, phase = out[:, 0], out[:, 1]
    assert out.shape == (4, 2, 32, 32)
    assert model.phase_decoder[-1].out_channels == 2
    gated = amp <= model.config.phase_gate
    assert gated.any() and (~gated).any()
    assert torch.all(phase[gated] == 0)
    assert phase.min() >= 0 and phase.max() < 1


def test_angle_head_wraps_sharply_where_c_s_turn_smoothly():
    """Half a turn of (c, s) across a row gives p going 1 -> 0 in one pixel, not a ramp."""
    model = _model(base_width=4, depth=2, phase_head="angle")
    angle = torch.linspace(-3.0, 3.0, 32) + math.pi  # crosses pi once, mid-row
    cs = torch.stack([torch.cos(angle), torch.sin(angle)]).reshape(1, 2, 1, 32).expand(1, 2, 32, 32)
    p = model._angle_target(cs, torch.ones(1, 1, 32, 32))[0, 0, 0]
    steps = p.diff()
    assert (steps.abs() > 0.5).sum() == 1  # one jump: the wrap line
    assert torch.all(steps[steps.abs() <= 0.5] > 0)  # smooth elsewhere


def test_with_angle_head_keeps_every_weight_but_the_phase_head():
    from cdiflow.models.cnn import with_angle_head

    source = build_model(ModelConfig(base_width=4, depth=2), seed=3).eval()
    angled = with_angle_head(source, seed=1).eval()
    assert angled.config.phase_head == "angle" and source.config.phase_head == "target"
    head = f"phase_decoder.{len(angled.phase_decoder) - 1}.weight"
    ours, theirs = angled.state_dict(), source.state_dict()
    assert ours[head].shape[0] == 2 and theirs[head].shape[0] == 1
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items() if not k.startswith(head[:-7]))
    x = _inputs(2)
    with torch.no_grad():
        assert torch.equal(angled(x)[:, 0], source(x)[:, 0])  # the amplitude is unchanged
    assert with_angle_head(angled) is angled


def test_angle_head_ramp_gate_scales_p_across_the_gate_and_no_further():
    model = _model(base_width=4, depth=2, phase_head="angle", phase_gate_width=0.1)
    cs = torch.tensor([-1.0, 1e-3]).reshape(1, 2, 1, 1).expand(1, 2, 1, 5)  # p ~ 1
    amplitude = torch.tensor([0.0, 0.05, 0.1, 0.15, 0.9]).reshape(1, 1, 1, 5)
    p = model._angle_target(cs, amplitude)[0, 0, 0]
    expected = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0])
    assert torch.allclose(p, expected * p[-1], atol=1e-6) and p[-1] > 0.99
