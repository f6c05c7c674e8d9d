"""bench/proxy_speed.py -- training throughput of the DiT (proxy.py presets): images/s and achieved GFLOP/s beside the
same machine's measured matmul ceilings (fp32, and bf16 where training uses it), with the machine.

Run: python bench/proxy_speed.py [--preset quick --size 16 --threads 1 --steps 30 --precision auto --levers]
Times full training steps (forward, backward, AdamW) on random data after warm-up steps, best of 3 repeats. FLOPs
are counted by PyTorch's FlopCounterMode (the matrix products of forward and backward: linear, attention, patchify),
which is how "achieved GFLOP/s" is usually reported. The ceilings are a large square matmul (2048 x 2048) on the
same threads, in fp32 and in bf16: what this machine reaches on the work that dominates a transformer.
--threads 1 is how ablate.py's workers train (one thread each, one worker per core).
--levers: the same measurement for the quick model as it was before each speed lever, to show what each bought
(tanh GELU, four heads, captions padded to 20 tokens, fp32).
"""
import argparse
import os
import platform
import sys
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402


def matmul_ceiling(device, dtype, n=2048, seconds=1.0):
    """GFLOP/s of an n x n matmul in `dtype`."""
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


def measure(cfg, size, batch, tokens, steps, device, precision, tanh_gelu=False):
    """(images/s, FLOPs per training image, parameters) of the DiT built from preset `cfg`, best of 3 timed blocks of
    `steps`."""
    torch.manual_seed(0)
    model = proxy.DiT(image_size=size, patch=cfg.get("patch"), width=cfg["width"], depth=cfg["depth"],
                      heads=cfg["heads"], text_depth=cfg["text_depth"], max_tokens=tokens).to(device)
    if tanh_gelu:  # the activation before the lever: GELU's tanh approximation (DiT's), 4.7x slower on this CPU
        for m in model.modules():
            if isinstance(m, nn.GELU):
                m.approximate = "tanh"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    tok = torch.randint(3, 24, (batch, tokens), device=device)
    tok[:, 8:] = 0  # one-object captions have at most 8 words; the rest is padding
    mixed = torch.autocast(device.type, dtype=torch.bfloat16, enabled=data.uses_bf16(device, precision))

    def step():
        with mixed:
            loss = proxy.rf_loss(model, x0, tok).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    best = 0.0
    for _ in range(3):
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, batch * steps / (time.perf_counter() - t0))
    return best, counter.get_total_flops() / batch, sum(x.numel() for x in model.parameters())


def levers(cfg, a, device):
    """The quick model before each speed lever, then with all of them (the preset as it is)."""
    rows = [("before: tanh GELU, 4 heads, 20 tokens, fp32", dict(cfg, heads=4), 20, "fp32", True),
            ("+ exact GELU", dict(cfg, heads=4), 20, "fp32", False),
            ("+ one head", cfg, 20, "fp32", False),
            ("+ captions padded to 8 tokens, not 20", cfg, 8, "fp32", False),
            ("+ bf16 autocast (this CPU has bf16 hardware)" if data.uses_bf16(torch.device("cpu")) else "+ bf16 autocast", cfg, 8,
             "bf16", False)]
    for label, c, tokens, precision, tanh in rows:
        speed, flops, _ = measure(c, a.size, a.batch_size or cfg["batch_size"], tokens, a.steps, device, precision, tanh)
        print(f"  {label:52s} {speed:6.0f} images/s  {flops * speed / 1e9:5.1f} GFLOP/s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick", choices=list(proxy.PRESETS), help="model size preset")
    p.add_argument("--size", type=int, default=16, choices=data.SIZES, help="image side")
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--tokens", type=int, default=8, help="caption length (8: one-object captions, 20: two objects)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat (after warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (ablate.py's workers use 1 each)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="as proxy.py --precision")
    p.add_argument("--levers", action="store_true", help="also measure the quick model before each speed lever")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.error = data.arg_error
    a = p.parse_args(argv)
    if min(a.steps, a.threads, a.tokens) < 1 or (a.batch_size is not None and a.batch_size < 1):
        data.fail("--steps, --threads, --tokens and --batch-size must be at least 1")
    torch.set_num_threads(a.threads)
    device = data.pick_device(a.device)
    cfg = proxy.PRESETS[a.preset]
    batch = a.batch_size or cfg["batch_size"]
    bf16 = data.uses_bf16(device, a.precision)
    speed, flops, params = measure(cfg, a.size, batch, a.tokens, a.steps, device, a.precision)
    fp32_ceiling = matmul_ceiling(device, torch.float32)
    bf16_ceiling = matmul_ceiling(device, torch.bfloat16) if bf16 else None
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs (load average {load:.1f}), torch {torch.__version__}, "
          f"{a.threads} thread(s), device {device} ({name}), {time.strftime('%Y-%m-%d')}")
    print(f"model: preset {a.preset} ({params / 1e6:.2f}M parameters), {a.size}x{a.size}, batch {batch}, captions of {a.tokens} tokens, "
          f"{'bf16 autocast' if bf16 else 'fp32'}: {flops / 1e6:.1f} MFLOP per training image")
    achieved = flops * speed / 1e9
    print(f"throughput: {speed:.0f} training images/s, {achieved:.1f} GFLOP/s achieved")
    print(f"matmul ceiling (2048^3): fp32 {fp32_ceiling:.1f} GFLOP/s -> {100 * achieved / fp32_ceiling:.0f}% of it"
          + (f"; bf16 {bf16_ceiling:.1f} GFLOP/s -> {100 * achieved / bf16_ceiling:.0f}% of it" if bf16 else ""))
    if a.levers:
        print("what each speed lever bought (the quick model, same machine, same threads):")
        levers(cfg, a, device)


if __name__ == "__main__":
    main()
