"""The training loop on in-memory patches: loss masking, augmentation, schedule, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coalmine.runtime.bundle import Normalization
from coalmine.runtime.errors import UsageError
from coalmine.train.config import TrainConfig
from coalmine.train.loop import (
    augment,
    bce_dice_loss,
    fit,
    hist_confusion,
    lr_lambda,
    tune_threshold,
    validate,
)
from coalmine.train.metrics import confusion_matrix
from coalmine.train.model import build_model


def _data(n: int = 12, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 12, 2)
        y[i, r : r + 12, c : c + 12] = 1
    x = rng.normal(0, 1, (n, 23, size, size)).astype(np.float32)
    x[:, 3] += 1.5 * y  # a weak signal in one band
    x[0, :, 0, :4] = np.nan
    y[1, :2, :] = 255
    return x, y


def _smp_dice_bce(logits, target, valid, dice_weight):
    """The same loss from segmentation-models-pytorch's DiceLoss (+ masked BCE), for comparison.

    smp >= 0.4 writes Dice as a Tversky score, (I + s) / (I + (FP + FN) / 2 + s), so its
    smooth 0.5 is our (2I + 1) / (|p| + |t| + 1); before 0.4 it was (2I + s) / (|p| + |t| + s).
    """
    import segmentation_models_pytorch as smp
    from packaging.version import Version

    smooth = 0.5 if Version(smp.__version__) >= Version("0.4") else 1.0
    dice = smp.losses.DiceLoss("binary", from_logits=True, smooth=smooth, ignore_index=255)
    y = torch.where(valid > 0, target, torch.full_like(target, 255.0))
    bce = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum()
    return bce / valid.sum().clamp_min(1.0) + dice_weight * dice(logits, y)


def test_dice_is_smp_dice_where_the_batch_has_mine_pixels_and_penalises_false_mines_where_not() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 16, 16, generator=g) * 3
    target = (torch.rand(4, 1, 16, 16, generator=g) > 0.8).float()
    valid = (torch.rand(4, 1, 16, 16, generator=g) > 0.1).float()
    for w in (0.0, 0.5, 1.0):
        assert float(bce_dice_loss(logits, target, valid, w)) == pytest.approx(
            float(_smp_dice_bce(logits, target, valid, w)), rel=1e-5, abs=1e-6)
    # No mine pixel in the batch: smp sets the Dice term to 0 (Dice is undefined there); ours is
    # 1 - 1 / (predicted mine area + 1), so background-only batches still push false mines down.
    none = torch.zeros_like(target)
    ours = float(bce_dice_loss(logits, none, valid, 1.0)) - float(bce_dice_loss(logits, none, valid, 0.0))
    p = float((torch.sigmoid(logits) * valid).sum())
    assert ours == pytest.approx(1.0 - 1.0 / (p + 1.0), rel=1e-5)
    assert float(_smp_dice_bce(logits, none, valid, 1.0)) == pytest.approx(float(bce_dice_loss(logits, none, valid, 0.0)))


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    f = [lr_lambda(s, 10, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert lr_lambda(100, 10, 100) == pytest.approx(0.0)
    assert lr_lambda(55, 10, 100) == pytest.approx(0.5)


def test_loss_ignores_invalid_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    lg = torch.randn(2, 1, 8, 8, generator=g)
    t = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    v = torch.ones_like(t)
    v[:, :, :3] = 0
    a = bce_dice_loss(lg, t, v, 1.0)
    lg2 = lg.clone()
    lg2[:, :, :3] = 50.0  # whatever the network says on nodata pixels
    assert float(bce_dice_loss(lg2, t, v, 1.0)) == pytest.approx(float(a))
    # a perfect prediction has BCE ~0 and Dice ~0
    perfect = (t * 2 - 1) * 30
    assert float(bce_dice_loss(perfect, t, v, 1.0)) < 0.02


def test_augment_keeps_image_and_label_aligned() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (6, 8, 8)).astype(np.uint8)
    x = np.repeat(y[:, None].astype(np.float32), 3, axis=1) * np.arange(1, 4, dtype=np.float32)[None, :, None, None]
    xa, ya = augment(x, y, np.random.default_rng(2))
    for i in range(6):
        for b in range(3):
            np.testing.assert_array_equal(xa[i, b], ya[i] * (b + 1))
    assert any(not np.array_equal(ya[i], y[i]) for i in range(6))


def test_validation_histograms_match_direct_confusion_matrix() -> None:
    x, y = _data(4)
    torch.manual_seed(0)
    model = build_model()
    norm = Normalization.identity()
    cfg = TrainConfig(batch_size=2, device="cpu")
    _, hist = validate(model, x, y, np.arange(4), norm, torch.device("cpu"), cfg, False)
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(norm.apply(x)))).numpy()[:, 0]
    valid = np.isfinite(x).all(axis=1)
    for t in (0.3, 0.5, 0.7):
        want = confusion_matrix((prob >= t).astype(np.uint8), y, valid)
        got = hist_confusion(hist, t)
        # histogram bins are 0.001 wide: a pixel within a bin of t may land on either side
        assert np.abs(got - want).sum() <= int((np.abs(prob - t) < 1e-3).sum())
    assert 0.05 <= tune_threshold(hist) <= 0.95


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=4, lr=2e-3, warmup_epochs=1, patience=0, seed=7, device="cpu", tile=32)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path) -> None:
    torch.set_num_threads(1)
    x, y = _data()
    norm = Normalization(tuple(np.nanmean(x, axis=(0, 2, 3)).tolist()), tuple(np.nanstd(x, axis=(0, 2, 3)).tolist()))
    tr, va = np.arange(0, 9), np.arange(9, 12)
    full = fit(x, y, tr, va, norm, _cfg(), tmp_path / "a", run_key="k", progress=False)

    class Stop(Exception):
        pass

    def stop_after_2(epoch, row):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(x, y, tr, va, norm, _cfg(), tmp_path / "b", run_key="k", progress=False, on_epoch_end=stop_after_2)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    with pytest.raises(UsageError, match="belongs to other data or settings"):
        fit(x, y, tr, va, norm, _cfg(), tmp_path / "b", run_key="other", resume=True, progress=False)
    resumed = fit(x, y, tr, va, norm, _cfg(), tmp_path / "b", run_key="k", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        for k in ("train_loss", "val_loss", "val_kappa", "lr"):
            assert a[k] == b[k], k
    assert full.best_epoch == resumed.best_epoch
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    np.testing.assert_array_equal(full.val_hist, resumed.val_hist)
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss") and len(log) == 4


def test_resume_without_checkpoint_refused(tmp_path) -> None:
    x, y = _data(4)
    with pytest.raises(UsageError, match="no checkpoint .* to resume from; run without --resume"):
        fit(x, y, np.arange(2), np.arange(2, 4), Normalization.identity(), _cfg(), tmp_path, resume=True, progress=False)


def test_cuda_device_refused_without_gpu(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    x, y = _data(4)
    with pytest.raises(UsageError, match="torch sees no CUDA GPU; use --device cpu"):
        fit(x, y, np.arange(2), np.arange(2, 4), Normalization.identity(), _cfg(device="cuda"), tmp_path, progress=False)
