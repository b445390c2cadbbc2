"""LR schedule shapes and optimizer construction (pure, no Ray)."""

from __future__ import annotations

import pytest
import torch

from senet_dist.models import create_model
from senet_dist.train.config import ScheduleConfig, TrainConfig
from senet_dist.train.optim import build_optimizer, build_scheduler, lr_factor


def factors(s: ScheduleConfig, total: int, per_epoch: int) -> list[float]:
    return [lr_factor(i, total, per_epoch, s) for i in range(total)]


def test_cosine_with_warmup_rises_then_decays_to_floor() -> None:
    f = factors(ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.1), total=100, per_epoch=10)
    assert f[:10] == sorted(f[:10]) and f[0] < 0.2  # linear ramp
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # monotone decay
    assert f[-1] == pytest.approx(0.1, abs=0.01)


def test_warmup_steps_override_epochs() -> None:
    f = factors(ScheduleConfig(name="none", warmup_epochs=5, warmup_steps=3), total=20, per_epoch=10)
    assert f[:3] == pytest.approx([0.25, 0.5, 0.75]) and set(f[3:]) == {1.0}


def test_step_schedule_drops_by_gamma() -> None:
    f = factors(ScheduleConfig(name="step", step_epochs=2, gamma=0.5), total=60, per_epoch=10)
    assert f[0] == f[19] == 1.0 and f[20] == f[39] == 0.5 and f[40] == 0.25


def test_warmup_longer_than_run_is_clamped() -> None:
    f = factors(ScheduleConfig(name="cosine", warmup_epochs=10), total=5, per_epoch=1)
    assert max(f) <= 1.0 and f == sorted(f)


def test_scheduler_drives_optimizer_lr_and_decay_groups() -> None:
    cfg = TrainConfig.from_dict(
        {"model": "se_resnet_tiny", "epochs": 2, "optimizer": {"name": "sgd", "lr": 0.4, "weight_decay": 1e-4}}
    )
    model = create_model("se_resnet_tiny", num_classes=3)
    opt = build_optimizer(model, cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert all(p.ndim == 1 for p in opt.param_groups[1]["params"])  # BN and biases are not decayed
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < 0.4 and lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_adamw() -> None:
    cfg = TrainConfig().with_overrides({"optimizer.name": "adamw", "optimizer.lr": 1e-3})
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 1e-3


def test_adam_is_chosen_with_its_betas() -> None:
    cfg = TrainConfig().with_overrides({"optimizer": "adam", "lr": 1e-4, "optimizer.betas": [0.8, 0.99]})
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    assert type(opt) is torch.optim.Adam  # not AdamW (a subclass-free check: AdamW is its own class)
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["betas"] == (0.8, 0.99)


def test_weight_decay_scope_switches_the_param_groups() -> None:
    model = create_model("se_resnet_tiny", num_classes=3)
    every = {id(p) for p in model.parameters()}
    skip = build_optimizer(model, TrainConfig().with_overrides({"weight_decay": 1e-4}))
    decayed = {id(p) for g in skip.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed and decayed < every  # norm scales and biases are left out
    assert all(p.ndim > 1 for g in skip.param_groups if g["weight_decay"] > 0 for p in g["params"])
    both = build_optimizer(
        model, TrainConfig().with_overrides({"weight_decay": 1e-4, "optimizer.weight_decay_scope": "all"})
    )
    assert [g["weight_decay"] for g in both.param_groups] == [1e-4]
    assert {id(p) for p in both.param_groups[0]["params"]} == every
    # and it acts: one step with zero gradients shrinks a BN bias only when every parameter is decayed
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.bias.data.fill_(1.0)
    for opt, expect_moved in ((skip, False), (both, True)):
        before = bn.bias.detach().clone()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        assert (not torch.equal(bn.bias, before)) == expect_moved


def test_early_stopping_counts_epochs_without_a_new_best() -> None:
    from senet_dist.train.worker import RunState

    run = RunState()
    decisions = [run.should_stop(acc, patience=2) for acc in (0.5, 0.6, 0.6, 0.7, 0.65, 0.7)]
    assert decisions == [False, False, False, False, False, True]
    assert run.best_val_acc == 0.7
    run = RunState()
    assert not any(run.should_stop(0.1, patience=None) for _ in range(5))  # off by default
