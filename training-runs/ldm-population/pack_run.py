"""Write to stdout a tar of what a GPU call brings back of the population LDM run.

    python training-runs/ldm-population/pack_run.py RUNS_DIR | split -b 15000000 - "$OUT/runs.tar."

From ``RUNS_DIR/ldm``: the slim EMA weights of the last step (``final-step-N.pt``, made from
``checkpoint.pt``, which with its optimizer state is too large to come back), the newest
snapshot before it, ``config.json``, ``inputs.json``, ``metrics.jsonl``, and the logs in
``RUNS_DIR``. A device call brings back at most 64 MiB: with the ``ldm-gpu.json`` U-Net
(7.2 M parameters) the two weight files are about 29 MB each.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path


def main(runs: Path) -> int:
    from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint

    run = runs / "ldm"
    ckpt = load_checkpoint(run / "checkpoint.pt", kind="ldm")
    final = save_checkpoint(run / f"final-step-{ckpt.step:07d}.pt", ckpt.slimmed())
    snaps = sorted(
        p for p in (run / "snapshots").glob("step-*.pt") if p.name != f"step-{ckpt.step:07d}.pt"
    )
    files = [final, *snaps[-1:]]
    files += [
        run / n for n in ("config.json", "inputs.json", "metrics.jsonl") if (run / n).exists()
    ]
    files += sorted(runs.glob("*.log"))
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        for f in files:
            tar.add(f, arcname=str(f.relative_to(runs)))
    names = ", ".join(str(f.relative_to(runs)) for f in files)
    print(f"packed {names}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
