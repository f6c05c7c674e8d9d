"""bench/proxy_speed.py -- training images per second of the proxy DiT (proxy.py presets), with the machine.

Run: python bench/proxy_speed.py [--size 32 --preset cpu --batch-size 64 --steps 20 --device auto]
Times full training steps (forward, backward, AdamW) on random data after a few warm-up steps.
"""
import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32, choices=data.SIZES, help="image side")
    p.add_argument("--preset", default="cpu", choices=list(proxy.PRESETS), help="model size preset")
    p.add_argument("--batch-size", type=int, default=64, help="batch size")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    a = p.parse_args(argv)
    device = data.pick_device(a.device)
    c = proxy.PRESETS[a.preset]
    torch.manual_seed(0)
    model = proxy.DiT(image_size=a.size, patch=max(2, a.size // 8), width=c["width"], depth=c["depth"],
                      heads=c["heads"], text_depth=c["text_depth"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.rand(a.batch_size, 3, a.size, a.size, device=device) * 2 - 1
    tok = torch.randint(3, 24, (a.batch_size, 20), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(a.steps + 3):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast:
            loss = proxy.rf_loss(model, x0, tok).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs (load average {load:.1f}), torch {torch.__version__} "
          f"threads {torch.get_num_threads()}, device {device} ({name})")
    print(f"proxy preset {a.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), "
          f"{a.size}x{a.size}, batch {a.batch_size}: {a.steps * a.batch_size / dt:.0f} training images/s "
          f"({a.steps / dt:.2f} steps/s)")


if __name__ == "__main__":
    main()
