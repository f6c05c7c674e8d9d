"""bench/proxy_speed.py -- training throughput of the DiT (proxy.py presets): images/s and achieved GFLOP/s beside the
same machine's measured fp32 matmul ceiling, with the machine.

Run: python bench/proxy_speed.py [--preset quick --size 16 --threads 1 --steps 30 --device auto]
Times full training steps (forward, backward, AdamW) on random data after a few warm-up steps. FLOPs are counted by
PyTorch's FlopCounterMode (the matrix products of forward and backward: linear, attention, patchify), which is how
"achieved GFLOP/s" is usually reported. The ceiling is a large square fp32 matmul (2048 x 2048) on the same threads:
what this CPU reaches on the kind of work that dominates a transformer, and the bar the model's steps are held to.
--threads 1 is how ablate.py's workers train (one thread each, one worker per core).
"""
import argparse
import os
import platform
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402


def matmul_ceiling(device, n=2048, seconds=1.0):
    """GFLOP/s of an n x n fp32 matmul (bf16 on CUDA, the precision training runs in there)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick", choices=list(proxy.PRESETS), help="model size preset")
    p.add_argument("--size", type=int, default=16, choices=data.SIZES, help="image side")
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (ablate.py's workers use 1 each)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.error = lambda msg: data.fail(f"{msg} (see --help)")
    a = p.parse_args(argv)
    if a.steps < 1 or a.threads < 1 or (a.batch_size is not None and a.batch_size < 1):
        data.fail("--steps, --threads and --batch-size must be at least 1")
    torch.set_num_threads(a.threads)
    device = data.pick_device(a.device)
    c = proxy.PRESETS[a.preset]
    batch = a.batch_size or c["batch_size"]
    torch.manual_seed(0)
    model = proxy.DiT(image_size=a.size, patch=proxy.patch_for(a.size, c), width=c["width"], depth=c["depth"],
                      heads=c["heads"], text_depth=c["text_depth"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.rand(batch, 3, a.size, a.size, device=device) * 2 - 1
    tok = torch.randint(3, 24, (batch, 20), device=device)
    tok[:, 12:] = 0  # captions of the shapes set are 8-17 words, padded to 20
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            loss = proxy.rf_loss(model, x0, tok).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()  # one training step
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    ceiling = matmul_ceiling(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs (load average {load:.1f}), torch {torch.__version__}, "
          f"{a.threads} thread(s), device {device} ({name}), {time.strftime('%Y-%m-%d')}")
    print(f"model: preset {a.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{model.grid ** 2} image tokens), {a.size}x{a.size}, batch {batch}, {flops / batch / 1e6:.1f} MFLOP per "
          f"training image")
    print(f"throughput: {batch / dt:.0f} training images/s ({1 / dt:.2f} steps/s), {flops / dt / 1e9:.1f} GFLOP/s "
          f"achieved; matmul ceiling {ceiling:.1f} GFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'} 2048^3): "
          f"{100 * flops / dt / 1e9 / ceiling:.0f}% of it")


if __name__ == "__main__":
    main()
