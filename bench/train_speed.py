"""bench/train_speed.py -- training throughput of the proxy and target DiTs in the loop every stage trains with
(proxy.train): images/s, and the achieved TFLOP/s beside the GPU's bf16 peak; eager and --compile; one process or
several at once on one GPU (as ablate.py's workers share it).

Run: python bench/train_speed.py [--configs target:paper,proxy:paper] [--compile] [--processes 4,8]
                                [--size 32 --steps 100 --warmup 20 --batch-size B --device auto --json speed.json]
                                [--budget SECONDS]
Each figure times --steps steps of proxy.train (random batches, bf16 autocast on CUDA, AdamW, gradient clipping, the
EMA for the target) after --warmup untimed steps (where torch.compile compiles), on random images and captions, the
model built as proxy.py / train_t2i.py build it, at its preset's batch size. FLOPs: one training step's forward and
backward as torch.utils.flop_counter.FlopCounterMode counts them (matrix products and convolutions; the optimiser's
and the EMA's elementwise work is not counted). --processes N: N processes train the first config at once, started
together; the figure is their images/s together. Each line is printed as soon as it is measured, and --json is
rewritten after each, so a run cut short keeps what it measured.
"""
import argparse
import math
import multiprocessing
import os
import platform
import re
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402
import train_t2i  # noqa: E402

# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity), from the vendors' data sheets; the first match of the device
# name wins (so "H100 PCIe" before "H100", and "L4" only as a whole word: not an L40 or L40S)
PEAKS = [(r"H200 NVL", 835), (r"H200", 989), (r"H100 NVL", 835), (r"H100 PCIe", 756), (r"H100", 989), (r"A100", 312),
         (r"L40S", 362), (r"\bL4\b", 121), (r"RTX 4090", 165)]
VOCAB, TOKENS = 24, 20  # the shapes set's vocabulary size and caption length (data.py)


def peak_tflops(name):
    """The bf16 dense peak of a device name (torch.cuda.get_device_name), or None when the table does not know it."""
    return next((peak for pattern, peak in PEAKS if re.search(pattern, name)), None)


def build(kind, preset, size):
    """The DiT exactly as proxy.py (kind "proxy") or train_t2i.py ("target") builds it, and its preset."""
    c = (proxy.PRESETS if kind == "proxy" else train_t2i.PRESETS)[preset]
    torch.manual_seed(0)
    model = proxy.DiT(image_size=size, patch=c.get("patch"), width=c["width"], depth=c["depth"], heads=c["heads"],
                      text_depth=c["text_depth"], vocab_size=VOCAB, max_tokens=TOKENS)
    return model, c


def step_flops(model, batch_size, size, device):
    """FLOPs of one training step's forward and backward (as counted by FlopCounterMode), under the loop's autocast."""
    x0 = torch.rand(batch_size, 3, size, size, device=device) * 2 - 1
    tok = torch.randint(3, VOCAB, (batch_size, TOKENS), device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=data.uses_bf16(device)):
            loss = proxy.rf_loss(model, x0, tok).mean()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(config, a, compiled=False, barrier=None):
    """Train one config with proxy.train for warmup + steps (+ a last stretch holding the final checkpoint write) and
    time the steps between the warm-up's end and the window's end. Returns a dict of figures."""
    kind, preset = config.split(":")
    device = data.pick_device(a.device)
    model, c = build(kind, preset, a.size)
    model.to(device)
    batch = a.batch_size or c["batch_size"]
    flops = step_flops(model, batch, a.size, device)
    if compiled:
        model.compile()  # as train_t2i.py --compile does
    marks = {}

    def on_log(step, model, ema):
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step == a.warmup and barrier is not None:
            barrier.wait()  # every process starts its timed steps together
        marks[step] = time.time()

    every = math.gcd(a.warmup, a.steps)
    images = torch.randint(0, 256, (4096, 3, a.size, a.size), dtype=torch.uint8)
    tokens = torch.randint(3, VOCAB, (4096, TOKENS))
    with tempfile.TemporaryDirectory() as tmp:
        files = proxy.Run(os.path.join(tmp, "state.pt"), ["<pad>"] * VOCAB, ckpt_every=a.warmup + a.steps + every,
                          desc=config, on_log=on_log, hook_every=every)
        proxy.train(model, images, tokens, a.warmup + a.steps + every, batch, c["lr"], 0, device, files,
                    warmup=c.get("warmup", 100), ema_decay=train_t2i.EMA_DECAY if kind == "target" else 0.0)
    start, end = marks[a.warmup], marks[a.warmup + a.steps]
    return dict(config=config, mode="compile" if compiled else "eager", params=sum(p.numel() for p in model.parameters()),
                batch_size=batch, size=a.size, steps=a.steps, start=start, end=end,
                images_per_s=a.steps * batch / (end - start), flops_per_step=flops, device=str(device))


def worker(config, a, barrier, queue):
    """One of --processes N: one thread, as ablate.py's workers."""
    torch.set_num_threads(1)
    try:
        queue.put(measure(config, a, barrier=barrier))
    except Exception as e:  # noqa: BLE001 -- the parent reports it
        barrier.abort()
        queue.put({"error": f"{type(e).__name__}: {e}"})


def together(config, a, n):
    """--processes n: n spawned processes train `config` at once; their images/s together."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(config, a, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(errors[0])
    start, end = min(r["start"] for r in results), max(r["end"] for r in results)
    r = results[0]
    return dict(r, mode=f"eager x{n} processes", processes=n, start=start, end=end,
                images_per_s=n * a.steps * r["batch_size"] / (end - start))


def describe(r, name, peak, single=None):
    tflops = r["flops_per_step"] * r["images_per_s"] / r["batch_size"] / 1e12
    share = f"{100 * tflops / peak:.2f}% of the {peak} TFLOP/s bf16 peak of {name}" if peak else \
        f"bf16 peak unknown for {name}"
    more = f" together, {r['images_per_s'] / single:.2f}x one process" if single else \
        f" ({r['images_per_s'] / r['batch_size']:.1f} steps/s)"
    return (f"speed: {r['config'].replace(':', ' ')}-preset {r['params'] / 1e6:.2f}M params, {r['size']}x{r['size']}, "
            f"batch {r['batch_size']}, {r['mode']}: {r['images_per_s']:.0f} images/s{more}; {tflops:.2f} TFLOP/s = "
            f"{share}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="target:paper,proxy:paper",
                   help="model:preset pairs, proxy:tiny|quick|paper or target:tiny|quick|paper, in the order measured")
    p.add_argument("--compile", action="store_true", help="also time each config under torch.compile (CUDA only)")
    p.add_argument("--processes", default="", help="e.g. 4,8: also time the first config in N processes at once")
    p.add_argument("--size", type=int, default=32, choices=data.SIZES, help="image side")
    p.add_argument("--batch-size", type=int, help="batch size (default: each preset's)")
    p.add_argument("--steps", type=int, default=100, help="timed steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation happens here)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--json", help="write every figure measured so far to this .json file")
    p.add_argument("--budget", type=float, default=float("inf"),
                   help="seconds: start no new measurement after this long (one measurement takes up to a minute)")
    a = p.parse_args(argv)
    configs = a.configs.split(",")
    for config in configs:
        kind, _, preset = config.partition(":")
        if preset not in {"proxy": proxy.PRESETS, "target": train_t2i.PRESETS}.get(kind, {}):
            data.fail(f"--configs: {config} is not proxy:{'|'.join(proxy.PRESETS)} or target:{'|'.join(train_t2i.PRESETS)}")
    if min(a.steps, a.warmup) < 1 or (a.batch_size is not None and a.batch_size < 1):
        data.fail("--steps, --warmup and --batch-size must be at least 1")
    if not re.fullmatch(r"(\d+(,\d+)*)?", a.processes) or "0" in a.processes.split(","):
        data.fail("--processes must be positive counts separated by commas, e.g. 4,8")
    device = data.pick_device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    peak = peak_tflops(name) if device.type == "cuda" else None
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, device {device} ({name})", flush=True)
    results, single = [], {}
    plan = [(c, False, 1) for c in configs] + [(configs[0], False, int(n)) for n in a.processes.split(",") if n]
    if a.compile and device.type != "cuda":
        print("note: --compile needs CUDA (as train_t2i.py); compiled figures skipped on the CPU", flush=True)
    elif a.compile:
        plan += [(c, True, 1) for c in configs]
    t0, failed = time.time(), []
    label = lambda c, comp, k: f"{c} {'compile' if comp else 'eager'}{f' x{k}' if k > 1 else ''}"
    for i, (config, compiled, n) in enumerate(plan):
        if time.time() - t0 > a.budget:
            print(f"note: --budget {a.budget:g} s spent; not measured: " + ", ".join(label(*x) for x in plan[i:]),
                  flush=True)
            break
        try:
            r = together(config, a, n) if n > 1 else measure(config, a, compiled)
        except Exception as e:  # noqa: BLE001 -- one failure (e.g. no compiler for torch.compile) keeps the others
            failed.append(label(config, compiled, n))
            print(f"failed: {failed[-1]}: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}", flush=True)
            continue
        if n == 1 and not compiled:
            single[config] = r["images_per_s"]  # what --processes compares with
        results.append(r)
        print(describe(r, name, peak, single.get(config) if n > 1 else None), flush=True)
        if a.json:
            data.atomic_save({"device": name, "peak_tflops": peak, "results": results}, a.json)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
