"""train_t2i.py -- train the target text-to-image DiT on a selected subset (or on the whole training set).

Reads:   D/train.pt and D/val.pt (via data.load_dataset), SUBSET.npy (optional, from prune.py), RUN/train_state.pt
         (with --resume)
Writes:  RUN/model.pt           the EMA weights as "model" (+ config, step, vocab, args): what a reader samples and
                                evaluates; proxy.load_proxy(RUN/model.pt) and evaluate.py --model RUN/model.pt use it
         RUN/train_state.pt     everything --resume needs: raw weights, optimizer, EMA, RNG state, step, args
         RUN/log.csv            loss by step, overall and in ten bins of t
         RUN/samples.png        EMA samples for the first 16 validation prompts above their real images, with prompts
         RUN/samples_step{N}.png every --grid-every steps; RUN/snapshots/step{N}.pt (EMA) every --snapshot-every steps
Run:     python train_t2i.py --data data/shapes --subset runs/x/shift50.npy --out runs/x/shift50 [--steps 3000]
         torchrun --nproc_per_node 4 train_t2i.py ...      (same flags; DistributedDataParallel, no flag needed)

Implements the last step of Alchemist (arXiv 2512.16905; its experiments train the target T2I model, STAR-0.3B, on
the pruned subset and compare with the full set and with random subsets). Here the target is the proxy's DiT
(proxy.py), made larger, trained with the same loss and the same loop (proxy.train): AdamW, linear warm-up, bf16
autocast on CUDA, an EMA of the weights for sampling, atomic checkpoints and exact resume.

Runs are compared at an equal number of steps (the paper's setting, equal compute): a 50% subset is seen twice as
often as the full set within the same --steps. The EMA snapshots are what evaluate.py / ablate.py turn into an
FID-versus-step curve; this file never imports them (the pipeline's data walks one way).
"""
import argparse
import copy
import math
import os
import sys

import torch
import torch.distributed as dist

import data
import proxy

# ----------------------------------------------------------------------------------------------------------------
# Presets: each is larger than proxy.PRESETS' preset of the same name (the target outgrows its proxy, as in the
# paper). The cpu preset keeps 64 image tokens (patch 2 at 16x16, patch 4 at 32x32); README gives its speed.
PRESETS = {
    "cpu": dict(width=160, depth=6, heads=4, text_depth=2, steps=3000, batch_size=64, lr=1e-3, warmup=100),
    "gpu": dict(width=384, depth=12, heads=6, text_depth=2, steps=30000, batch_size=256, lr=3e-4, warmup=1000),
}
EMA_DECAY = 0.999  # proxy.train warms the decay up as min(0.999, (1 + step) / (10 + step))


# ----------------------------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(
        description="Train the target text-to-image DiT on a subset (--subset) or on the whole training set. Runs "
                    "are compared at an equal number of --steps (equal compute): a smaller subset is simply seen "
                    "more often. Several processes: run the same command under torchrun.")
    p.add_argument("--data", required=True, help="data folder made by data.py (reads train.pt and val.pt)")
    p.add_argument("--subset", help="train only on these rows of train.pt (a sorted unique int64 .npy from prune.py); "
                                    "default: all rows")
    p.add_argument("--out", required=True, help="run folder; writes model.pt (EMA weights), train_state.pt, log.csv, "
                                                "samples*.png, snapshots/")
    p.add_argument("--preset", choices=list(PRESETS), default="cpu",
                   help="model and schedule size: cpu (width 160, depth 6) | gpu (width 384, depth 12)")
    p.add_argument("--steps", type=int, help="training steps, the same for every subset compared (default: preset)")
    p.add_argument("--batch-size", type=int, help="global batch size, split over torchrun processes (default: preset)")
    p.add_argument("--lr", type=float, help="AdamW learning rate after the linear warm-up (default: preset)")
    p.add_argument("--width", type=int, help="override the preset's model width (must divide by its heads)")
    p.add_argument("--depth", type=int, help="override the preset's number of DiT blocks")
    p.add_argument("--ema", type=float, default=EMA_DECAY,
                   help="EMA decay of the weights that model.pt holds, warmed up as min(decay, (1+step)/(10+step)) so a "
                        "short run's EMA forgets its random start; 0 = no EMA (model.pt holds the raw weights)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, batches, t, noise, caption drop")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN/train_state.pt; the end equals an uninterrupted run (same flags)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only; ignored on the CPU)")
    p.add_argument("--ckpt-every", type=int, default=500,
                   help="write train_state.pt and model.pt every N steps (and at every grid or snapshot step)")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="save the EMA weights as RUN/snapshots/step{N}.pt every N steps, for an FID-versus-step "
                        "curve (0 = off)")
    p.add_argument("--grid-every", type=int, default=500,
                   help="write RUN/samples_step{N}.png (EMA samples for 16 validation prompts) every N steps (0 = off)")
    a = p.parse_args(argv)

    # torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; only rank 0 prints and writes files.
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    stop = data.fail if rank == 0 else (lambda msg: sys.exit(2))  # bad input: one line (from rank 0), exit 2
    say = print if rank == 0 else (lambda *args, **kw: None)
    cfg = dict(PRESETS[a.preset])
    cfg.update({k: v for k, v in dict(width=a.width, depth=a.depth).items() if v is not None})
    steps, batch_size, lr = a.steps or cfg["steps"], a.batch_size or cfg["batch_size"], a.lr or cfg["lr"]
    if min(steps, batch_size, cfg["width"], cfg["depth"]) < 1 or lr <= 0:
        stop("--steps, --batch-size, --lr, --width and --depth must be positive")
    if cfg["width"] % cfg["heads"]:
        stop(f"--width {cfg['width']} must be divisible by the preset's {cfg['heads']} attention heads")
    if a.ckpt_every < 1 or a.snapshot_every < 0 or a.grid_every < 0 or not 0 <= a.ema < 1:
        stop("--ckpt-every must be positive, --snapshot-every and --grid-every >= 0, --ema in [0, 1)")
    if batch_size % world:
        stop(f"--batch-size {batch_size} must be divisible by the {world} processes")
    device = data.pick_device(a.device)

    # Everything that can be wrong with the input is checked before the first file is written.
    try:
        d = data.load_dataset(a.data, "train")
        val = data.load_dataset(a.data, "val")
        rows = torch.arange(len(d["images"]))
        if a.subset:
            rows = torch.from_numpy(proxy.load_subset(a.subset, len(d["images"])))  # sorted, unique, in range
    except data.DataError as e:
        stop(str(e))

    if world > 1:  # one process per device: gloo on the CPU, nccl on CUDA
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        run(a, cfg, steps, batch_size, lr, device, d, val, rows, rank, world, stop, say)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(a, cfg, steps, batch_size, lr, device, d, val, rows, rank, world, stop, say):
    size = d["images"].shape[-1]
    torch.manual_seed(a.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = proxy.DiT(image_size=size, patch=max(2, size // 8), width=cfg["width"], depth=cfg["depth"],
                      heads=cfg["heads"], text_depth=cfg["text_depth"], vocab_size=len(d["vocab"]),
                      max_tokens=d["tokens"].shape[1]).to(device)
    ema_model = copy.deepcopy(model).eval()  # holds the EMA weights for writing and sampling (rank 0 only)
    if a.compile and device.type != "cuda":
        print("warning: --compile needs CUDA; ignored on the CPU", file=sys.stderr)
    elif a.compile:
        model.compile()  # in place: the state_dict keeps its plain names, so checkpoints load anywhere
    decay = a.ema
    state_path, model_path = os.path.join(a.out, "train_state.pt"), os.path.join(a.out, "model.pt")
    if a.resume and not os.path.exists(state_path):
        say(f"note: --resume but no {state_path} yet; starting from step 0")
    args = {k: v for k, v in vars(a).items() if v is not None}
    extra = {"weights": "ema" if decay > 0 else "raw", "ema_decay": decay, "args": args}
    say(f"target: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(rows)} of "
        f"{len(d['images'])} training rows, {steps} steps of {batch_size} on {device}"
        f"{f' x {world} processes' if world > 1 else ''}, EMA decay {decay:.4f}")

    def on_log(step, model, ema):
        """Called by proxy.train on rank 0 (see hook_every): model.pt, snapshots and grids, all from the EMA."""
        ema_model.load_state_dict(ema if ema is not None else model.state_dict())
        proxy.save_checkpoint(model_path, ema_model, step, d["vocab"], **extra)
        if a.snapshot_every and step % a.snapshot_every == 0:
            proxy.save_checkpoint(os.path.join(a.out, "snapshots", f"step{step}.pt"), ema_model, step, d["vocab"], **extra)
        if a.grid_every and step % a.grid_every == 0:
            proxy.sample_grid(ema_model, val, os.path.join(a.out, f"samples_step{step}.png"), device=device)

    # on_log runs at every checkpoint and wherever a grid or a snapshot is due (and at the end)
    hook_every = math.gcd(a.ckpt_every, a.snapshot_every, a.grid_every)
    if rank == 0:
        os.makedirs(a.out, exist_ok=True)
    try:
        proxy.train(model, d["images"][rows], d["tokens"][rows], state_path, d["vocab"], steps, batch_size, lr,
                    a.seed, device, resume=a.resume, ckpt_every=a.ckpt_every, hook_every=hook_every, log_path=os.path.join(a.out, "log.csv"),
                    warmup=cfg["warmup"], ema_decay=decay, desc="target", extra=extra, on_log=on_log)
        if rank > 0:
            return
        final, ckpt = proxy.load_proxy(model_path, device)  # exactly what evaluate.py will read
    except data.DataError as e:  # a --resume checkpoint of another model size, a non-finite loss
        stop(str(e))
    proxy.sample_grid(final, val, os.path.join(a.out, "samples.png"), device=device)
    grids = sorted(f for f in os.listdir(a.out) if f.startswith("samples_step"))
    snaps = os.listdir(os.path.join(a.out, "snapshots")) if os.path.isdir(os.path.join(a.out, "snapshots")) else []
    say(f"wrote {model_path} ({ckpt['weights']} weights, step {ckpt['step']}), train_state.pt, log.csv, samples.png"
        f"{f', {len(grids)} samples_step*.png' if grids else ''}{f', {len(snaps)} snapshots/' if snaps else ''} "
        f"in {a.out}")


if __name__ == "__main__":
    main()
