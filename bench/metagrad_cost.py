"""bench/metagrad_cost.py -- the time of one meta step (metagrad.py) in plain proxy training steps, and its memory.

Run: python bench/metagrad_cost.py [--size 16 --preset paper --batch-size 64 --steps 10 --device auto]
Each method runs in its own process (so that the CPU's peak resident memory is its own) on random data: a few
warm-up steps, then --steps timed steps of metagrad.meta_step, against plain steps (forward, backward, AdamW on one
batch of the same size). All in float32, as metagrad.py runs. The rater's features are precomputed in metagrad.py,
so the rater is a few MLPs on a [B, 2K + C] table here too.

The floor, counting one "pass" = forward + backward of the proxy on B rows (= one plain step):
  plain       1 pass
  alchemist   primary on the training batch and on the validation batch (Eq. 5), reference on the training batch
              (Eq. 4; its forward also gives the gap's L(theta_ref; x_i)): 3 passes, ~3x
  simplified  Eq. 9 needs no reference: the primary's 2 passes, ~2x
  exact       the real Eq. 5 step (2 passes), plus the virtual step: a forward and a backward with create_graph on the
              training batch (1 pass, keeping its graph), the validation forward through theta' and the double
              backward through both (about 1.5-2 passes): ~4.5-5x, and the memory of the kept graph
"""
import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import metagrad  # noqa: E402
import proxy  # noqa: E402
import rater  # noqa: E402

METHODS = ["plain", "alchemist", "simplified", "exact"]


def measure(method, a):
    """Seconds per step and peak memory (MB) of one method; runs in a fresh process."""
    device = data.pick_device(a.device)
    c = proxy.PRESETS[a.preset]
    torch.manual_seed(0)
    model = proxy.DiT(image_size=a.size, patch=c.get("patch"), width=c["width"], depth=c["depth"],
                      heads=c["heads"], text_depth=c["text_depth"]).to(device)
    g = torch.Generator().manual_seed(0)
    fake = lambda n: {"images": torch.randint(0, 256, (n, 3, a.size, a.size), dtype=torch.uint8, generator=g),
                      "tokens": torch.randint(3, 24, (n, 20), generator=g)}
    train, val = fake(512), fake(256)
    D = 2 * rater.K_DRAWS + c["width"]
    feats = torch.randn(512, D, generator=g).to(device)
    r = rater.Rater(D, width=c["width"]).to(device)
    opt = lambda m, wd=0.0: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=wd)
    reference = copy.deepcopy(model) if method == "alchemist" else None
    s = dict(primary=model, reference=reference, rater=r, baseline=None, scale=None, opt_primary=opt(model),
             opt_ref=opt(reference) if reference is not None else None, opt_rater=opt(r, 0.05))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports kB)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(a.steps + 3):
        if i == 3:  # after warm-up
            sync()
            t0 = time.perf_counter()
        b = metagrad.draw_batch(g, feats, train, val, a.batch_size, device)
        if method == "plain":
            loss = proxy.rf_loss(model, b["x"], b["tok"], b["t"], b["noise"]).mean()
            metagrad.update(s["opt_primary"], loss, list(model.parameters()), metagrad.MODEL_CLIP)
        else:
            metagrad.meta_step(s, b, "exact" if method == "exact" else "alchemist", method == "simplified", 0.5, 1e-4)
    sync()
    seconds = (time.perf_counter() - t0) / a.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return {"method": method, "seconds": seconds, "peak_mb": peak,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16, choices=data.SIZES, help="image side")
    p.add_argument("--preset", default="paper", choices=list(proxy.PRESETS), help="proxy size preset")
    p.add_argument("--batch-size", type=int, default=64, help="training (and validation) rows per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method (after 3 warm-up steps)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--only", choices=METHODS, help=argparse.SUPPRESS)  # internal: measure one method, print JSON
    a = p.parse_args(argv)
    if a.only:
        print(json.dumps(measure(a.only, a)))
        return
    device = data.pick_device(a.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"device {device} ({name})")
    flags = ["--size", str(a.size), "--preset", a.preset, "--batch-size", str(a.batch_size), "--steps", str(a.steps),
             "--device", a.device]
    results = []
    for method in METHODS:  # one fresh process each: peak RSS is per process
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *flags, "--only", method],
                             capture_output=True, text=True)
        if out.returncode != 0:
            why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
            data.fail(f"measuring {method} failed: {why}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    plain = results[0]["seconds"]
    mem = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS growth over setup"
    print(f"proxy preset {a.preset} ({results[0]['params_m']:.2f}M params), {a.size}x{a.size}, batch {a.batch_size} "
          f"(+ a validation batch of {a.batch_size}), {a.steps} timed steps each, float32")
    print(f"{'method':<11} {'ms/step':>9} {'x plain':>8} {'memory MB':>10}  ({mem})")
    for r in results:
        print(f"{r['method']:<11} {1000 * r['seconds']:9.1f} {r['seconds'] / plain:8.2f} {r['peak_mb']:10.1f}")


if __name__ == "__main__":
    main()
