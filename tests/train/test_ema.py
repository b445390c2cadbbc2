"""EMA of the weights: the decay schedule, the update rule, divergence from and convergence toward the trained
weights, and its round trip through the components' checkpoint state (Ray-free)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from senet_dist.models import create_model
from senet_dist.train.components import build_components, restore, training_state
from senet_dist.train.config import EmaConfig
from senet_dist.train.ema import ModelEma, ema_decay
from senet_dist.train.loops import train_epoch


def _distance(a: nn.Module, b: nn.Module) -> float:
    return sum((x - y).abs().sum().item() for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_decay_schedule_starts_at_a_copy_and_warms_up_to_the_cap() -> None:
    cfg = EmaConfig(enabled=True, decay=0.999, warmup=True, warmup_power=0.75)
    d = [ema_decay(step, cfg) for step in range(1, 20001)]
    assert d[0] == 0.0  # the first update copies the model
    assert all(a <= b for a, b in zip(d, d[1:], strict=False)) and d[1] < 0.5
    assert d[-1] == 0.999 and max(d) == 0.999
    assert d[10_000] == pytest.approx(0.999, abs=1e-4)  # power 3/4 reaches ~0.999 near 10k steps
    flat = EmaConfig(enabled=True, decay=0.9, warmup=False)
    assert [ema_decay(s, flat) for s in (1, 2, 50)] == [0.0, 0.9, 0.9]


def test_update_is_a_lerp_of_floats_and_a_copy_of_integer_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEma(model, EmaConfig(enabled=True, decay=0.75, warmup=False))
    ema.update()  # the first update: a copy
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.add_(5)
    assert ema.update() == 0.75
    after, src = ema.module.state_dict(), model.state_dict()
    for k, v in after.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * before[k] + 0.25 * src[k])
        else:
            assert torch.equal(v, src[k])  # num_batches_tracked follows the model
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_differs_from_the_trained_weights_and_converges_toward_them(tiny_config) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(
        batch_size=8, num_workers=1, **{"ema.enabled": True, "ema.decay": 0.9, "ema.warmup": False, "lr": 0.1}
    )
    comp = build_components(cfg, 3, torch.device("cpu"), steps_per_epoch=6)
    assert comp.ema is not None
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))) for _ in range(6)]
    train_epoch(comp.model, batches, comp.criterion, comp.optimizer, comp.scheduler, comp.opts, ema=comp.ema)
    assert comp.ema.updates == 6
    gap = _distance(comp.ema.module, comp.core)
    assert gap > 1e-3  # an average of past weights, not the weights
    gaps = []
    for _ in range(30):  # training stopped: the average closes in on the final weights, geometrically
        comp.ema.update()
        gaps.append(_distance(comp.ema.module, comp.core))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < gap * 0.9**29


def test_checkpoint_state_holds_both_weights_and_restores_the_average(tiny_config) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(batch_size=4, num_workers=1, **{"ema.enabled": True})
    comp = build_components(cfg, 2, torch.device("cpu"), steps_per_epoch=2)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 2, (4,))) for _ in range(2)]
    train_epoch(comp.model, batches, comp.criterion, comp.optimizer, comp.scheduler, comp.opts, ema=comp.ema)
    state = training_state(comp)
    assert set(state["ema"]) == {"model", "updates"} and state["ema"]["updates"] == 2
    assert state["ema"]["model"].keys() == state["model"].keys()
    fresh = build_components(cfg, 2, torch.device("cpu"), steps_per_epoch=2)
    restore(fresh, state)
    assert fresh.ema is not None and fresh.ema.updates == 2
    for k, v in fresh.ema.module.state_dict().items():
        assert torch.equal(v, state["ema"]["model"][k])
    # a checkpoint written without EMA: the average restarts from its trained weights
    plain = build_components(cfg, 2, torch.device("cpu"), steps_per_epoch=2)
    restore(plain, {**state, "ema": None})
    assert plain.ema is not None and _distance(plain.ema.module, plain.core) == 0.0


def test_ema_follows_the_model_not_the_ddp_wrapper() -> None:
    """``ModelEma`` is built on the bare module; its keys match the checkpoint's ``model`` state dict."""
    core = create_model("se_resnet_tiny", num_classes=2)
    ema = ModelEma(core, EmaConfig(enabled=True))
    assert list(ema.module.state_dict()) == list(core.state_dict())
