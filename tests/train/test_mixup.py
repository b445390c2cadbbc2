"""Mixup / CutMix: soft targets sum to 1, CutMix's pasted area matches its lambda, the switch and the off epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from senet_dist.train.config import MixupConfig, TrainConfig
from senet_dist.train.mixup import Mixup, cutmix_box, mix_targets, mixup_for_epoch


def _batch(n: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is constant i: every mixed pixel says where it came from."""
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return images, torch.arange(n) % 5


def _mixer(seed: int = 0, **kw: float) -> Mixup:
    return Mixup(MixupConfig(**kw), num_classes=5, rng=np.random.default_rng(seed))


def test_mixup_blends_images_and_targets_with_one_lambda() -> None:
    images, labels = _batch()
    for seed in range(20):
        mixed, targets = _mixer(seed, mixup_alpha=0.4)(images, labels)
        assert targets.shape == (8, 5) and torch.allclose(targets.sum(1), torch.ones(8))
        lam = float(mixed[0, 0, 0, 0] - 7) / (0 - 7)  # x0 = lam*0 + (1-lam)*7
        expected = images * lam + images.flip(0) * (1 - lam)
        assert torch.allclose(mixed, expected, atol=1e-5)
        assert torch.allclose(targets, mix_targets(labels, 5, lam), atol=1e-5)
        assert targets[0, labels[0]] == pytest.approx(lam if labels[0] != labels[7] else 1.0, abs=1e-5)


def test_cutmix_pasted_area_matches_lambda() -> None:
    images, labels = _batch(size=32)
    areas = []
    for seed in range(50):
        mixer = _mixer(seed, cutmix_alpha=1.0)
        mixed, targets = mixer(images, labels)
        pasted = (mixed[0, 0] == 7).float().mean().item()  # pixels of sample 0 taken from sample 7
        lam_kept = targets[0, labels[0]].item() if labels[0] != labels[7] else None
        assert torch.allclose(targets.sum(1), torch.ones(8))
        if lam_kept is not None:
            assert pasted == pytest.approx(1 - lam_kept, abs=1e-6)  # lambda is the area actually kept
        assert ((mixed[0, 0] == 0) | (mixed[0, 0] == 7)).all()  # a box is pasted, nothing is blended
        areas.append(pasted)
    assert 0.2 < np.mean(areas) < 0.8 and max(areas) > 0  # Beta(1, 1): boxes of every size


def test_cutmix_box_is_clipped_and_lambda_corrected() -> None:
    rng = np.random.default_rng(3)
    for lam in (0.1, 0.5, 0.9):
        for _ in range(20):
            (top, bottom, left, right), corrected = cutmix_box(20, 30, lam, rng)
            assert 0 <= top <= bottom <= 20 and 0 <= left <= right <= 30
            assert corrected == pytest.approx(1 - (bottom - top) * (right - left) / 600)
            assert corrected >= lam - 1e-9  # clipping can only shrink the box


def test_switch_prob_and_prob_pick_what_runs() -> None:
    images, labels = _batch()

    def kinds(**kw: float) -> set[str]:
        out = set()
        mixer = _mixer(1, **kw)
        for _ in range(40):
            p = mixer.draw(32, 32)
            out.add("cutmix" if p.cutmix else ("mixup" if p.lam != 1.0 else "none"))
        return out

    assert kinds(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0) == {"mixup"}
    assert kinds(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0) == {"cutmix"}
    assert kinds(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5) == {"mixup", "cutmix"}
    assert kinds(mixup_alpha=1.0, prob=0.0) == {"none"}
    assert kinds(mixup_alpha=1.0, prob=0.5) == {"mixup", "none"}
    mixed, targets = _mixer(0, mixup_alpha=1.0, prob=0.0)(images, labels)
    assert torch.equal(mixed, images) and torch.equal(targets.argmax(1), labels)


def test_off_after_epoch_and_seeding() -> None:
    cfg = MixupConfig(mixup_alpha=0.2, off_after_epoch=3)
    assert [mixup_for_epoch(cfg, 5, e, seed=0, rank=0) is not None for e in (1, 3, 4, 9)] == [True, True, False, False]
    assert mixup_for_epoch(MixupConfig(), 5, 1, seed=0, rank=0) is None  # both alphas 0: off
    a = mixup_for_epoch(cfg, 5, 2, seed=7, rank=1)
    b = mixup_for_epoch(cfg, 5, 2, seed=7, rank=1)
    c = mixup_for_epoch(cfg, 5, 2, seed=7, rank=0)
    assert a is not None and b is not None and c is not None
    assert a.draw(32, 32) == b.draw(32, 32) != c.draw(32, 32)  # a resumed epoch draws the same


def test_soft_targets_train_through_the_loss_with_label_smoothing() -> None:
    """nn.CrossEntropyLoss on mixed targets + smoothing equals timm's smoothed mixed one-hot targets."""
    logits = torch.randn(8, 5)
    labels = torch.arange(8) % 5
    lam, eps = 0.3, 0.1
    soft = mix_targets(labels, 5, lam)
    ours = torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, soft)
    off, on = eps / 5, 1 - eps + eps / 5
    one_hot = torch.full((8, 5), off).scatter_(1, labels[:, None], on)
    timm_target = one_hot * lam + one_hot.flip(0) * (1 - lam)
    timm = (-timm_target * logits.log_softmax(-1)).sum(-1).mean()
    assert ours.item() == pytest.approx(timm.item(), rel=1e-6)


def test_config_section_and_shorthand_values() -> None:
    cfg = TrainConfig().with_overrides(["mixup.cutmix_alpha=1.0", "mixup.off_after_epoch=10"])
    assert cfg.mixup.enabled and cfg.mixup.active(10) and not cfg.mixup.active(11)
    assert not TrainConfig().mixup.enabled


def test_a_training_epoch_on_mixed_batches(tiny_config) -> None:
    """The loop's mix hook: soft targets through the criterion, accuracy against each sample's dominant label."""
    from senet_dist.train.components import build_components
    from senet_dist.train.loops import train_epoch

    torch.manual_seed(0)
    cfg = tiny_config(
        batch_size=8, num_workers=1, **{"mixup.mixup_alpha": 0.4, "mixup.cutmix_alpha": 1.0, "label_smoothing": 0.1}
    )
    comp = build_components(cfg, 5, torch.device("cpu"), steps_per_epoch=4)
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))) for _ in range(4)]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    mixer = mixup_for_epoch(cfg.mixup, 5, 1, seed=0, rank=0)
    assert mixer is not None

    def spy(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = mixer(images, labels)
        seen.append(out)
        return out

    sums = train_epoch(comp.model, batches, comp.criterion, comp.optimizer, comp.scheduler, comp.opts, mix=spy)
    assert sums.steps == 4 and sums.count == 32 and np.isfinite(sums.loss) and 0 <= sums.acc <= 1
    assert len(seen) == 4 and all(t.shape == (8, 5) and torch.allclose(t.sum(1), torch.ones(8)) for _, t in seen)
    assert any(not torch.equal(x, b[0]) for (x, _), b in zip(seen, batches, strict=True))  # batches were mixed
