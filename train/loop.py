"""The training loop: BCE + Dice, AdamW, warm-up + cosine schedule, checkpoints and resume.

Reproducibility: the network is initialised from ``torch.manual_seed(seed)``; each epoch's
shuffling and augmentation (flips, 90-degree rotations) come from a NumPy generator seeded
with ``(seed, epoch)``, so an epoch does not depend on how the run got there, and a run
resumed from its checkpoint (model, optimiser, schedule, AMP scaler, early-stopping state
and history) continues exactly as if it had not stopped. On CPU deterministic algorithms are
requested from torch. On CUDA mixed precision (fp16 autocast + gradient scaling) and the
channels-last memory format are used; cuDNN autotuning makes CUDA runs fast, not bitwise
reproducible.

Validation runs every epoch on the validation patches at threshold 0.5 and keeps histograms
of the predicted probability for mine and background pixels, from which the confusion matrix
at any threshold follows (used to tune the threshold on request). Early stopping watches the
validation kappa; the weights of the best epoch are the result.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from coalmine.runtime._io import atomic_output
from coalmine.runtime.bundle import ModelSpec, Normalization
from coalmine.runtime.errors import InputError, UsageError
from coalmine.runtime.tables import write_csv

from .config import TrainConfig
from .metrics import accuracy_report, kappa_from_counts
from .model import build_model, load_plain
from .patches import LABEL_NODATA

log = logging.getLogger("coalmine.train.loop")

CHECKPOINT = "checkpoint.pt"
LOG_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_kappa", "val_oa", "val_iou_mine", "seconds")
#: Bins of the validation probability histograms (threshold resolution 0.001).
HIST_BINS = 1000


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    state_dict: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    best_kappa: float
    #: Histograms of validation probabilities for (background, mine) pixels at the best epoch.
    val_hist: np.ndarray
    epochs_run: int
    stopped_early: bool
    device: str
    amp: bool
    train_seconds: float
    tiles_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; refuse CUDA that is not there.

    Raises:
        UsageError: a CUDA device was asked for but torch sees none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r} is not a torch device; use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} asked for CUDA but torch sees no CUDA GPU; use --device cpu")
    return dev


def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Binary cross-entropy + soft Dice over valid pixels only.

    The Dice term is ``1 - (2·Σpt + 1) / (Σp + Σt + 1)`` over the whole batch. On a batch that
    holds mine pixels it equals segmentation-models-pytorch's
    ``DiceLoss("binary", smooth=0.5, ignore_index=255)`` (smp >= 0.4; a test compares them).
    It is written here because the two differ where it matters for this task: on a batch
    without any mine pixel smp drops the Dice term (Dice is undefined there), while this one
    stays ``1 - 1/(Σp + 1)`` and keeps pushing false mines (bare fields, settlements) down; and
    smp's ``smooth`` changed meaning in 0.4. smp's SoftBCEWithLogitsLoss averages over ignored
    pixels too, so the BCE term is also written here (mean over valid pixels).

    Args:
        logits: (N, 1, H, W) raw scores.
        target: (N, 1, H, W) 0/1 floats.
        valid: (N, 1, H, W) 0/1 floats; label nodata (and image nodata) pixels are 0.
        dice_weight: weight of the Dice term (0: BCE only).
    """
    logits = logits.float()
    n_valid = valid.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum() / n_valid
    if dice_weight <= 0:
        return bce
    p = torch.sigmoid(logits) * valid
    t = target * valid
    dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return bce + dice_weight * dice


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random 90-degree rotation and horizontal flip per sample (the 8 symmetries of a square)."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        k = int(rng.integers(0, 4))
        flip = bool(rng.integers(0, 2))
        a, b = np.rot90(x[i], k, axes=(1, 2)), np.rot90(y[i], k, axes=(0, 1))
        if flip:
            a, b = a[:, :, ::-1], b[:, ::-1]
        xs.append(a)
        ys.append(b)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))


def _batch_tensors(
    x: np.ndarray, y: np.ndarray, norm: Normalization, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xn = norm.apply(x)
    target = (y == 1).astype(np.float32)[:, None]
    valid = ((y != LABEL_NODATA) & np.isfinite(x).all(axis=1)).astype(np.float32)[:, None]
    xt = torch.from_numpy(xn).to(device, non_blocking=True)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    return xt, torch.from_numpy(target).to(device), torch.from_numpy(valid).to(device)


def predict_logits(
    model: torch.nn.Module,
    x: np.ndarray,
    norm: Normalization,
    device: torch.device,
    *,
    batch_size: int = 8,
    amp: bool = False,
) -> np.ndarray:
    """Logits (N, H, W) float32 of raw patches ``x`` (N, C, H, W) with NaN nodata."""
    model.eval()
    out = np.empty((x.shape[0],) + tuple(x.shape[2:]), dtype=np.float32)
    cl = device.type == "cuda"
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            xt = torch.from_numpy(norm.apply(np.asarray(x[s : s + batch_size]))).to(device)
            if cl:
                xt = xt.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and cl):
                lg = model(xt)
            out[s : s + batch_size] = lg.float()[:, 0].cpu().numpy()
    return out


def hist_confusion(hist: np.ndarray, threshold: float) -> np.ndarray:
    """Confusion matrix (rows predicted, columns reference) at ``threshold`` from the histograms."""
    cut = int(round(threshold * HIST_BINS))
    neg, pos = hist[0], hist[1]
    return np.array(
        [[neg[:cut].sum(), pos[:cut].sum()], [neg[cut:].sum(), pos[cut:].sum()]], dtype=np.int64
    )


def tune_threshold(hist: np.ndarray, lo: float = 0.05, hi: float = 0.95) -> float:
    """Threshold in [lo, hi] (step 0.01) that maximises kappa on the histograms."""
    best_t, best_k = 0.5, -2.0
    for t in np.round(np.arange(lo, hi + 1e-9, 0.01), 2):
        k = kappa_from_counts(hist_confusion(hist, float(t)))
        if k > best_k + 1e-12:
            best_t, best_k = float(t), k
    return best_t


def validate(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray,
    norm: Normalization,
    device: torch.device,
    cfg: TrainConfig,
    amp: bool,
) -> tuple[float, np.ndarray]:
    """Validation loss and probability histograms (2, HIST_BINS) over valid pixels."""
    hist = np.zeros((2, HIST_BINS), dtype=np.int64)
    loss_sum, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(idx), cfg.batch_size):
            b = np.sort(idx[s : s + cfg.batch_size])
            xb, yb = np.asarray(x[b]), np.asarray(y[b])
            xt, tt, vt = _batch_tensors(xb, yb, norm, device, device.type == "cuda")
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                lg = model(xt)
            loss_sum += float(bce_dice_loss(lg, tt, vt, cfg.dice_weight)) * len(b)
            n += len(b)
            prob = torch.sigmoid(lg.float()).cpu().numpy()[:, 0]
            valid = vt.cpu().numpy()[:, 0] > 0
            truth = (yb == 1)[valid]
            bins = np.minimum((prob[valid] * HIST_BINS).astype(np.int64), HIST_BINS - 1)
            hist[0] += np.bincount(bins[~truth], minlength=HIST_BINS)
            hist[1] += np.bincount(bins[truth], minlength=HIST_BINS)
    return loss_sum / max(n, 1), hist


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def write_log_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Write the per-epoch history as CSV (temp file + rename); a missing value is an empty cell."""
    write_csv(path, LOG_COLUMNS, ([row.get(c) for c in LOG_COLUMNS] for row in history))


def plot_curves(path: Path, history: list[dict[str, float]], best_epoch: int) -> None:
    """Loss and validation kappa/IoU per epoch as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    a1.plot(ep, [h["train_loss"] for h in history], label="train")
    a1.plot(ep, [h["val_loss"] for h in history], label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("BCE + Dice loss")
    a1.legend()
    a2.plot(ep, [h["val_kappa"] for h in history], label="kappa")
    a2.plot(ep, [h["val_iou_mine"] for h in history], label="IoU mine")
    a2.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation, threshold 0.5")
    a2.set_ylim(-0.05, 1.0)
    a2.legend()
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


@dataclass
class _Session:
    """The model and its optimiser state for one training run."""

    device: torch.device
    amp: bool
    model: Any
    opt: Any
    sched: Any
    scaler: Any
    steps_per_epoch: int


def _start_session(spec: ModelSpec, cfg: TrainConfig, n_train: int) -> _Session:
    """Seeded model (channels-last on CUDA), AdamW, warm-up + cosine schedule, AMP scaler."""
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    amp = bool(cfg.amp and cuda)
    if not cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    model = build_model(spec, cfg.encoder_weights).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = steps_per_epoch * cfg.warmup_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, warm, total))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return _Session(device, amp, model, opt, sched, scaler, steps_per_epoch)


@dataclass
class _Progress:
    """What a checkpoint carries besides the weights: history, best epoch, time spent."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"kappa": -2.0, "epoch": 0, "state": None, "hist": None, "bad": 0})
    start_epoch: int = 1
    seconds: float = 0.0


def _resume(run: _Session, ckpt_path: Path, run_key: str, cfg: TrainConfig) -> _Progress:
    """Load the checkpoint into ``run`` and return where training stood.

    Raises:
        UsageError: no checkpoint, or one of other data or settings.
    """
    if not ckpt_path.is_file():
        raise UsageError(f"--resume: no checkpoint {ckpt_path} to resume from; run without --resume")
    # tensors and plain data only (never code), and nothing is used before the run key matches
    ck = load_plain(ckpt_path, "--resume: checkpoint", "delete it and run without --resume",
                    error=UsageError, map_location=run.device)
    if not isinstance(ck, dict) or ck.get("run_key") != run_key:
        raise UsageError(
            f"--resume: checkpoint {ckpt_path} belongs to other data or settings; "
            "resume with the same inputs and options, or run without --resume"
        )
    try:
        run.model.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
        run.scaler.load_state_dict(ck["scaler"])
        best = dict(ck["best"])
        if best.get("hist") is not None:
            best["hist"] = best["hist"].cpu().numpy()
        progress = _Progress(list(ck["history"]), best, int(ck["epoch"]) + 1, float(ck.get("seconds", 0.0)))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise UsageError(f"--resume: checkpoint {ckpt_path} is incomplete or damaged ({type(exc).__name__}); "
                         "delete it and run without --resume") from None
    log.info("resuming after epoch %d of %d", ck["epoch"], cfg.epochs)
    return progress


def _train_epoch(run: _Session, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, norm: Normalization,
                 cfg: TrainConfig, epoch: int) -> float:
    """One pass over the training patches in a seeded shuffled order; returns the summed loss."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(np.asarray(train_idx))
    run.model.train()
    loss_sum = 0.0
    # Equal-sized batches (sizes differ by at most one): never a lone sample, which
    # BatchNorm cannot train on at a 1x1 bottleneck.
    for b in np.array_split(order, run.steps_per_epoch):
        srt = np.sort(b)  # memmap reads in file order, then back to the shuffled order
        inv = np.argsort(np.argsort(b))
        xb, yb = np.asarray(x[srt])[inv], np.asarray(y[srt])[inv]
        xb, yb = augment(xb, yb, rng)
        xt, tt, vt = _batch_tensors(xb, yb, norm, run.device, run.device.type == "cuda")
        run.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.amp):
            lg = run.model(xt)
        loss = bce_dice_loss(lg, tt, vt, cfg.dice_weight)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        loss_sum += float(loss.detach()) * len(b)
    return loss_sum


def _record_epoch(run: _Session, prog: _Progress, epoch: int, train_loss: float, val_loss: float,
                  hist: np.ndarray, seconds: float, patience: int) -> tuple[dict[str, float], bool]:
    """Append the epoch's row to the history and keep the weights of the best validation kappa.

    Returns:
        (the row, whether early stopping triggers: ``patience`` epochs without a better kappa).
    """
    rep = accuracy_report(hist_confusion(hist, 0.5))
    kappa = rep["kappa"] if rep["kappa"] is not None else 0.0
    row = {
        "epoch": epoch,
        "lr": float(run.opt.param_groups[0]["lr"]),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_kappa": float(kappa),
        "val_oa": float(rep["overall_accuracy"] or 0.0),
        "val_iou_mine": float(rep["iou_mine"] or 0.0),
        "seconds": seconds,
    }
    prog.history.append(row)
    best = prog.best
    if kappa > best["kappa"] + 1e-9:
        best.update(
            kappa=float(kappa),
            epoch=epoch,
            state={k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()},
            hist=hist,
            bad=0,
        )
    else:
        best["bad"] += 1
    stop = bool(patience and best["bad"] >= patience)
    if stop:
        best["stopped"] = True
    return row, stop


def _checkpoint(run: _Session, prog: _Progress, run_key: str, epoch: int, seconds: float) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds: tensors and plain data only, so that ``--resume`` reads it
    with ``weights_only=True`` (the validation histogram goes as a tensor)."""
    best = dict(prog.best)
    if isinstance(best.get("hist"), np.ndarray):
        best["hist"] = torch.from_numpy(np.ascontiguousarray(best["hist"]))
    return {
        "run_key": run_key,
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "scaler": run.scaler.state_dict(),
        "history": prog.history,
        "best": best,
        "seconds": seconds,
    }


def fit(
    x: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    norm: Normalization,
    cfg: TrainConfig,
    work_dir: Path,
    *,
    spec: ModelSpec | None = None,
    run_key: str = "",
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train the U-Net on cached patches; checkpoint every epoch into ``work_dir``.

    Args:
        x: raw patches (N, C, T, T) float32 with NaN nodata (may be a memmap).
        y: labels (N, T, T) uint8, 255 = nodata.
        train_idx, val_idx: indices of the two splits.
        norm: normalisation (training statistics).
        cfg: the settings (epochs, batch size, lr, seed, ...).
        work_dir: where ``checkpoint.pt`` and ``log.csv`` go.
        spec: the model spec (default: 23 inputs, 1 class).
        run_key: identifies the data + settings; a checkpoint with another key is not resumed.
        resume: continue from ``work_dir/checkpoint.pt``.
        progress: tqdm bar on stderr.
        on_epoch_end: called after each epoch's checkpoint is written (e.g. to stop a test run).

    Returns:
        :class:`FitResult` with the best epoch's weights.

    Raises:
        UsageError: ``resume`` without a checkpoint, or a checkpoint of other data/settings.
        InputError: an empty split.
    """
    from tqdm import tqdm

    if len(train_idx) < 2 or len(val_idx) == 0:
        raise InputError(
            f"training needs at least 2 training patches and 1 validation patch, got {len(train_idx)} "
            f"and {len(val_idx)}; add labelled area or lower tile / block_tiles"
        )
    spec = spec or ModelSpec(in_channels=x.shape[1])
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    run = _start_session(spec, cfg, len(train_idx))
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = work_dir / CHECKPOINT
    prog = _resume(run, ckpt_path, run_key, cfg) if resume else _Progress()

    stopped_early = bool(prog.best.get("stopped", False))
    bar = tqdm(total=cfg.epochs, initial=prog.start_epoch - 1, desc="epochs", unit="epoch", disable=not progress)
    tiles_done = 0
    t_run = time.perf_counter()
    try:
        for epoch in range(prog.start_epoch, cfg.epochs + 1):
            if stopped_early:
                break
            t0 = time.perf_counter()
            loss_sum = _train_epoch(run, x, y, train_idx, norm, cfg, epoch)
            tiles_done += len(train_idx)
            val_loss, hist = validate(run.model, x, y, np.asarray(val_idx), norm, run.device, cfg, run.amp)
            row, stopped_early = _record_epoch(run, prog, epoch, loss_sum / len(train_idx), val_loss, hist,
                                               time.perf_counter() - t0, cfg.patience)
            _save_checkpoint(ckpt_path, _checkpoint(run, prog, run_key, epoch,
                                                    prog.seconds + time.perf_counter() - t_run))
            write_log_csv(work_dir / "log.csv", prog.history)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", kappa=f"{row['val_kappa']:.3f}",
                            best=f"{prog.best['kappa']:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            if stopped_early:
                log.info("early stop after epoch %d: no better validation kappa for %d epochs", epoch, cfg.patience)
                break
    finally:
        bar.close()
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
    run_s = time.perf_counter() - t_run
    return FitResult(
        state_dict=prog.best["state"],
        history=prog.history,
        best_epoch=int(prog.best["epoch"]),
        best_kappa=float(prog.best["kappa"]),
        val_hist=prog.best["hist"],
        epochs_run=len(prog.history),
        stopped_early=stopped_early,
        device=str(run.device),
        amp=run.amp,
        train_seconds=prog.seconds + run_s,
        tiles_per_second=tiles_done / run_s if run_s > 0 and tiles_done else 0.0,
    )
