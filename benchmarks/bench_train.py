"""Training throughput of the U-Net-ResNet34 (tiles/s) and, optionally, accuracy on a synthetic series.

Throughput: full training steps (forward, BCE + Dice, backward, AdamW) on random 23-band tiles,
as ``coalmine.train.loop`` runs them: CPU fp32 always; on CUDA fp32 and AMP (fp16 autocast +
gradient scaling, channels-last) when a GPU is present, with AMP's speed-up over fp32 measured
in the same run. The figures are compared with the study's reference: 205 tiles x 200 epochs
= 41,000 tile-iterations in 140 min on an RTX 2060 6 GB (4.88 tiles/s), printing the ratio and
the time that workload would take here.

Accuracy (``--accuracy``): a default-settings training (reduced with --epochs/--size on a CPU) on
a generated Tapin-like series, training on the first years and testing on held-out later years
with ``coalmine.train.api.evaluate`` over the whole held-out scenes.

Examples:
    python benchmarks/bench_train.py                       # throughput, CPU (+ CUDA if present)
    python benchmarks/bench_train.py --accuracy --size 768 --epochs 12
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from coalmine.train.loop import bce_dice_loss
from coalmine.train.model import build_model

#: The study: 205 tiles x 200 epochs in 140 minutes on an RTX 2060 6 GB.
REF_TILE_ITERS = 205 * 200
REF_SECONDS = 140 * 60
REF_TILES_PER_S = REF_TILE_ITERS / REF_SECONDS
#: Memory bandwidth (GB/s) of some cards, for a rough RTX 2060 estimate from a measured GPU
#: (small-batch U-Net training is largely bandwidth-bound; treat the estimate as +-50 %).
BANDWIDTH_GBS = {"RTX 2060": 336, "RTX 3060": 360, "RTX 4060": 272, "T4": 320, "A10": 600, "L4": 300,
                 "A100": 1555, "H100 PCIe": 2000, "H100": 3350, "H200": 4800, "RTX 4090": 1008}


def _gpu_bandwidth(name: str) -> float | None:
    best = None
    for k, v in BANDWIDTH_GBS.items():
        if k.lower() in name.lower() and (best is None or len(k) > len(best[0])):
            best = (k, v)
    return None if best is None else float(best[1])


def measure(device: str, amp: bool, tile: int, batch: int, steps: int, warmup: int, seed: int = 0) -> float:
    """Tiles per second of full training steps on ``device``."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    model = build_model().to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 23, tile, tile, generator=g).to(dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, tile, tile, generator=g) > 0.8).float().to(dev)
    v = torch.ones_like(y)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp and cuda):
            lg = model(x)
        loss = bce_dice_loss(lg, y, v, 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    torch.set_num_threads(args.threads)
    t = measure("cpu", False, args.tile, args.batch, args.cpu_steps, 1)
    rows.append({"device": f"CPU ({args.threads} threads)", "precision": "fp32", "tiles_per_s": t})
    cuda_note = ""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        f32 = measure("cuda", False, args.tile, args.batch, args.gpu_steps, 10)
        f16 = measure("cuda", True, args.tile, args.batch, args.gpu_steps, 10)
        rows.append({"device": name, "precision": "fp32", "tiles_per_s": f32})
        rows.append({"device": name, "precision": "AMP fp16", "tiles_per_s": f16, "vs_fp32": f16 / f32})
        bw = _gpu_bandwidth(name)
        if bw:
            est = f16 * BANDWIDTH_GBS["RTX 2060"] / bw
            cuda_note = (f"RTX 2060 estimate from {name} AMP by memory bandwidth "
                         f"({BANDWIDTH_GBS['RTX 2060']} vs {bw:.0f} GB/s): {est:.1f} tiles/s, "
                         f"study workload {REF_TILE_ITERS / est / 60:.1f} min (reference 140 min)")
    else:
        cuda_note = "CUDA: not available on this machine (torch.cuda.is_available() is False); GPU rows skipped"
    print(f"\ntraining throughput, U-Net-ResNet34, 23 x {args.tile} x {args.tile}, batch {args.batch}")
    print(f"{'device':<34}{'precision':<11}{'tiles/s':>9}{'vs study':>10}{'41,000 tile-its':>17}{'vs fp32':>9}")
    for r in rows:
        ratio = r["tiles_per_s"] / REF_TILES_PER_S
        mins = REF_TILE_ITERS / r["tiles_per_s"] / 60
        vs = f"{r['vs_fp32']:.2f}x" if "vs_fp32" in r else "-"
        print(f"{r['device']:<34}{r['precision']:<11}{r['tiles_per_s']:>9.2f}{ratio:>9.2f}x{mins:>13.1f} min{vs:>9}")
    print(f"{'study: RTX 2060 6 GB (reference)':<34}{'?':<11}{REF_TILES_PER_S:>9.2f}{1.0:>9.2f}x{140.0:>13.1f} min{'-':>9}")
    print(cuda_note)
    print("target: the study workload in < 5 min on an H100-class GPU, i.e. > "
          f"{REF_TILE_ITERS / 300:.0f} tiles/s")
    return rows


def accuracy(args: argparse.Namespace) -> dict:
    """Default training on a synthetic series; test on held-out years (whole scenes)."""
    from coalmine.train.api import evaluate, train
    from coalmine.train.config import SceneSpec, TrainConfig
    from coalmine.train.synth import make_series

    torch.set_num_threads(args.threads)
    years = list(range(2016, 2022))
    train_years, test_years = years[:4], years[4:]
    with tempfile.TemporaryDirectory(prefix="bench_train_") as d:
        root = Path(d)
        t0 = time.perf_counter()
        series = make_series(root / "synth", years, seed=args.seed, size=args.size)
        specs = [SceneSpec(s.s2_dir, s.label_path, s.s1_path) for s in series if s.year in train_years]
        cfg = TrainConfig(scenes=tuple(specs), epochs=args.epochs, seed=args.seed, device=args.device)
        out = train(cfg, root / "bundle", progress=True)
        t_train = time.perf_counter() - t0
        b = json.loads((out / "bundle.json").read_text())
        rep_val = json.loads((out / "report.json").read_text())["validation"]
        tests = [SceneSpec(s.s2_dir, s.label_path, s.s1_path) for s in series if s.year in test_years]
        ev = evaluate(out, tests, device=args.device, progress=True)
    res = {
        "size": args.size, "epochs": args.epochs, "train_years": train_years, "test_years": test_years,
        "patches": b["training"]["patches"], "best_epoch": b["training"]["best_epoch"],
        "validation": {k: rep_val[k] for k in ("overall_accuracy", "kappa", "iou_mine")},
        "test_per_year": [
            {"year": y, **{k: s[k] for k in ("overall_accuracy", "kappa", "iou_mine", "users_accuracy", "producers_accuracy")}}
            for y, s in zip(test_years, ev["scenes"], strict=True)
        ],
        "test_total": {k: ev["total"][k] for k in ("overall_accuracy", "kappa", "iou_mine", "f1_mine")},
        "train_minutes": t_train / 60, "tiles_per_s": b["training"]["timings"]["tiles_per_s"],
    }
    print(f"\naccuracy on a generated Tapin-like series (seed {args.seed}, {args.size} x {args.size} px), "
          f"train {train_years[0]}-{train_years[-1]}, test {test_years[0]}-{test_years[-1]} (held out)")
    print(f"{'split':<22}{'OA':>8}{'kappa':>8}{'IoU mine':>10}")
    v = res["validation"]
    print(f"{'validation (blocked)':<22}{100 * v['overall_accuracy']:>7.1f}%{v['kappa']:>8.3f}{v['iou_mine']:>10.3f}")
    for r in res["test_per_year"]:
        print(f"{'test ' + str(r['year']):<22}{100 * r['overall_accuracy']:>7.1f}%{r['kappa']:>8.3f}{r['iou_mine']:>10.3f}")
    t = res["test_total"]
    print(f"{'test, both years':<22}{100 * t['overall_accuracy']:>7.1f}%{t['kappa']:>8.3f}{t['iou_mine']:>10.3f}")
    print(f"study (real Tapin data): OA 97.4 %, kappa 0.91; epochs here {args.epochs} "
          f"(best {res['best_epoch']}), {res['patches']}, {res['train_minutes']:.1f} min")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cpu-steps", type=int, default=3)
    ap.add_argument("--gpu-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accuracy", action="store_true", help="also run the synthetic-series accuracy study")
    ap.add_argument("--only-accuracy", action="store_true")
    ap.add_argument("--size", type=int, default=768, help="synthetic scene size (px) for --accuracy")
    ap.add_argument("--epochs", type=int, default=200, help="epochs for --accuracy (default: the study's 200)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    out: dict = {}
    if not args.only_accuracy:
        out["throughput"] = throughput(args)
    if args.accuracy or args.only_accuracy:
        out["accuracy"] = accuracy(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
