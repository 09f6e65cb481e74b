"""The refiner on the CPU: fp32 against bf16, contiguous against channels-last weights.

Two parts, side by side in one process on the shipped demo refiner:

1. **Network**: seconds per 32³ window of one forward pass at ``--batch`` windows, for fp32 and
   bf16 (autocast) with contiguous and ``channels_last_3d`` weights (best of ``--repeats``).
2. **End to end**: one held-out demo reconstruction (``--quality-input``, the ``.npz`` that
   ``benchmarks/gpu_wheels.sh`` writes: sub-002) refined with the default sampler by
   :class:`~realdeal.pipelines.refiner.RefinerPipeline` at ``--precision fp32`` and ``bf16``
   (the pipeline puts the weights channels-last on the CPU), with wall time and the quality
   figures of ``benchmarks/_quality.py`` (sharpness, noise std, white-matter noise KL, seam
   score) and how far the two outputs are apart.

bf16 only pays on a CPU with native bf16 instructions (AVX512-BF16 or AMX); elsewhere it is
emulated and many times slower, and ``realdeal refine --precision auto`` keeps fp32 there. The
table says which this CPU is. Writes ``--out`` (JSON) and a Markdown table beside it::

    python benchmarks/cpu_precision.py --quality-input .device-wheels/quality_input.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _quality import (  # benchmarks/ is sys.path[0] when run as a script
    NoiseReference,
    quality,
    save,
)

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "src/realdeal/demo_checkpoints/refiner.pt"


def network_rows(batch: int, repeats: int) -> list[dict]:
    import torch

    from realdeal.models.loading import load_refiner

    r = load_refiner(CHECKPOINT, "cpu", True)
    net = r.unet.eval()
    c = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d)).in_channels
    x = torch.randn(
        batch, c, r.window, r.window, r.window, generator=torch.Generator().manual_seed(0)
    )
    t = torch.full((batch,), 500)
    rows = []
    for fmt in ("contiguous", "channels_last_3d"):
        net = net.to(
            memory_format=torch.channels_last_3d if fmt != "contiguous" else torch.contiguous_format
        )
        for dtype in (None, torch.bfloat16):
            times = []
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=dtype is not None):
                net(x, t)  # warm-up: oneDNN picks and caches its kernels on the first call
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    net(x, t)
                    times.append(time.perf_counter() - t0)
            rows.append(
                {
                    "precision": "bf16" if dtype is not None else "fp32",
                    "weights": fmt,
                    "batch": batch,
                    "s_per_window": min(times) / batch,
                }
            )
            print(f"  {rows[-1]}", flush=True)
    base = rows[0]["s_per_window"]
    for row in rows:
        row["speedup"] = base / row["s_per_window"]
    return rows


def e2e_rows(input_path: Path, seed: int) -> tuple[list[dict], dict]:
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings

    with np.load(input_path) as f:
        x, orig, labels = (np.asarray(f[k]) for k in ("coarse", "original", "labels"))
    x, orig = x.astype(np.float32), orig.astype(np.float32)
    ref = NoiseReference.of(orig, np.isin(labels, (2, 41)))
    pipe = RefinerPipeline.from_checkpoint(CHECKPOINT)
    rows, outputs = [], {}
    for precision in ("fp32", "bf16"):
        settings = RefineSettings(precision=precision, seed=seed)
        plan = pipe.plan(x, settings)
        t0 = time.perf_counter()
        y = pipe.refine_array(x, settings).refined
        wall = time.perf_counter() - t0
        outputs[precision] = y
        q = quality(y, x, plan, ref)
        rows.append({"precision": precision, "wall_s": wall, **q})
        print(f"  {rows[-1]}", flush=True)
    brain = x > -0.95
    diff = np.abs(outputs["bf16"] - outputs["fp32"])[brain]
    original = quality(orig, x, plan, ref)
    return rows, {
        "abs_diff_mean": float(diff.mean()),
        "abs_diff_p99": float(np.percentile(diff, 99)),
        "abs_diff_max": float(diff.max()),
        "original": original,
    }


def markdown(result: dict) -> str:
    lines = [
        f"CPU: {result['cpu']}, {result['threads']} threads, native bf16: "
        f"{'yes' if result['native_bf16'] else 'no'} · torch {result['torch']}",
        "",
        f"**Network** (shipped demo refiner, {result['network'][0]['batch']} windows of 32³ a "
        "call, best of the repeats)",
        "",
        "| precision | weights | ms / window | speed-up |",
        "|---|---|---|---|",
    ]
    for r in result["network"]:
        lines.append(
            f"| {r['precision']} | {r['weights']} | {1000 * r['s_per_window']:.1f} | "
            f"{r['speedup']:.2f}× |"
        )
    if result.get("e2e"):
        o = result["e2e_diff"]["original"]
        lines += [
            "",
            "**End to end** (held-out sub-002, default sampler, weights channels-last)",
            "",
            "| precision | wall (s) | sharpness | noise std | noise KL WM | seam |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["e2e"]:
            lines.append(
                f"| {r['precision']} | {r['wall_s']:.1f} | {r['sharpness']:.4f} | "
                f"{r['noise_std']:.4f} | {r['noise_kl_wm']:.4f} | {r['seam_score']:.3f} |"
            )
        lines.append(
            f"| original | | {o['sharpness']:.4f} | {o['noise_std']:.4f} | 0 | "
            f"{o['seam_score']:.3f} |"
        )
        d = result["e2e_diff"]
        lines += [
            "",
            f"|bf16 − fp32| inside the brain (intensities in [−1, 1]): mean {d['abs_diff_mean']:.4f}, "
            f"99th percentile {d['abs_diff_p99']:.4f}, max {d['abs_diff_max']:.4f}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import platform

    import torch

    from realdeal.runtime.device import cpu_has_native_bf16

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quality-input", type=Path, help="sub-002's .npz (skip the e2e part if absent)"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu_precision.json")
    args = p.parse_args(argv)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    result = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
    }
    print("network:", flush=True)
    result["network"] = network_rows(args.batch, args.repeats)
    if args.quality_input:
        print("end to end:", flush=True)
        result["e2e"], result["e2e_diff"] = e2e_rows(args.quality_input, args.seed)
    md = markdown(result)
    return save(args.out, result, md)


if __name__ == "__main__":
    sys.exit(main())
