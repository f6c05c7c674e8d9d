"""bench/online_grid.py -- online batch selection against uniform batches and an offline subset, on the shapes set.

Run:     python bench/online_grid.py [--preset tiny|quick|paper] [--seeds N] [--workers N] [--runs RUNS] [--out OUT]
Writes:  OUT (default results/<preset>): online.csv (a row per run), online.md (at equal samples and at equal
         wall-clock time, each model also sampled with autoguidance), online_fid_vs_seconds.png
The comparison of "Autoguided Online Data Curation for Diffusion Model Training" (arXiv 2509.15267) on the quick grid's
data and target model: uniform batches, JEST and early AJEST (train_t2i.py --online; the reference is a smaller guide
model trained for a fraction of the steps, which is also the autoguidance guide), and ablate.py's offline Alchemist
Shift-Gsample 50% subset. Selection's time (scoring the super-batch) is counted, so "equal wall-clock time" is fair.
It shares ablate.py's working folder (RUNS, default runs/ablate_<preset>) and makes what it needs that is missing.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ablate  # noqa: E402
import data  # noqa: E402
import evaluate  # noqa: E402
import train_t2i  # noqa: E402

# the guide (JEST's reference and the autoguidance guide): its train_t2i.py flags and its share of the target's steps
GUIDE = {"tiny": (["--preset", "tiny", "--width", "8"], 0.25), "quick": (["--preset", "quick", "--width", "32"], 0.25),
         "paper": (["--preset", "paper", "--width", "64", "--depth", "4"], 1 / 16)}
GUIDANCE, TEMPERATURE = 2.0, 0.01  # autoguidance weight; JEST's selection temperature
MODES = {"none": "uniform", "jest": "jest", "early_ajest": "early_ajest"}  # train_t2i.py --online mode -> method
FIELDS = ["method", "seed", "fid", "fid_autoguided", "clip_score", "geneval_overall", "train_seconds",
          "score_seconds", "curve", "clock"]


def online_md(rows, P, preset, seconds):
    """Every method at equal samples (each run's end) and at equal wall-clock time (each run at its last snapshot
    within the cheapest method's training time, scoring included)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    mean = lambda m, k: ablate.mean_std(rows, m, None, k)[0]
    budget = min(mean(m, "train_seconds") for m in methods)
    lines = [f"# Online selection and autoguidance, preset `{preset}` ({P['steps']} steps of {P['batch_size']})", "",
             f"Mean ± std over seeds; FID on {P['n_samples']} samples (CFG {P['cfg']:g}; autoguided: no CFG, the guide "
             f"a smaller model trained {GUIDE[preset][1]:.3g} of the steps, weight {GUIDANCE}). Wall time "
             f"{seconds / 60:.1f} min on {platform.node()}, {time.strftime('%Y-%m-%d')}.", "",
             "## At equal samples (every run saw the same number of kept samples)", "",
             "| method | FID | FID autoguided | CLIP score | GenEval | train seconds | of which scoring | s/step |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {ablate.fmt(rows, m, None, 'fid', 4)} | {ablate.fmt(rows, m, None, 'fid_autoguided', 4)} | "
              f"{mean(m, 'clip_score'):.3f} | {mean(m, 'geneval_overall'):.2f} | {mean(m, 'train_seconds'):.0f} | "
              f"{mean(m, 'score_seconds'):.0f} | {mean(m, 'train_seconds') / P['steps']:.3f} |" for m in methods]
    lines += ["", f"## At equal wall-clock time ({budget:.0f} s of training, the cheapest method's)", "",
              "| method | FID at that time (the last snapshot within it) | samples seen by then |", "|---|---|---|"]
    for m in methods:
        at = []
        for r in [r for r in rows if r["method"] == m]:
            curve, clock = json.loads(r["curve"]), json.loads(r["clock"])
            within = [int(n) for n in clock if clock[n][1] <= budget * 1.02 and n in curve]  # 2%: timing noise
            at += [(curve[str(max(within))], clock[str(max(within))][0])] if within else []
        lines.append(f"| {m} | " + (f"{np.mean([f for f, _ in at]):.4f} ({len(at)} seeds) | "
                                    f"{np.mean([s for _, s in at]):.0f} |" if at else "no snapshot that early | – |"))
    return "\n".join(lines) + "\n"


def fid_vs_seconds(rows):
    """{method: {mean seconds: mean FID}} over seeds, at each curve point."""
    curves = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        pts = {}  # curve point -> [(seconds, FID)] over seeds
        for r in [r for r in rows if r["method"] == m]:
            curve, clock = json.loads(r["curve"]), json.loads(r["clock"])
            for n in [n for n in curve if n in clock]:
                pts.setdefault(n, []).append((clock[n][1], curve[n]))
        curves[m] = {round(float(np.mean([s for s, _ in v]))): float(np.mean([f for _, f in v])) for v in pts.values()}
    return curves


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=list(ablate.PRESETS), default="quick", help="sizes, as ablate.py's presets")
    p.add_argument("--seeds", type=int, help="training seeds per method (default: the preset's)")
    p.add_argument("--workers", type=int, help="training runs at once (default: the preset's)")
    p.add_argument("--runs", help="ablate.py's working folder (default runs/ablate_<preset>)")
    p.add_argument("--out", help="results folder (default results/<preset>)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.error = data.arg_error
    a = p.parse_args(argv)
    if (a.seeds is not None and a.seeds < 1) or (a.workers is not None and a.workers < 1):
        data.fail("--seeds and --workers must be at least 1")
    P = dict(ablate.PRESETS[a.preset], guidance=GUIDANCE)
    runs, out = a.runs or os.path.join("runs", f"ablate_{a.preset}"), a.out or os.path.join("results", a.preset)
    try:
        data.check_out(runs, flag="--runs")
        data.check_out(out)
    except data.DataError as e:
        data.fail(str(e))
    workers = a.workers or (P.get("gpu_workers", 1) if data.pick_device(a.device).type == "cuda" else P["workers"])
    ablate.lock_runs(runs)
    t0, offline = time.time(), [("alchemist", "shift_gsample", 0.5)]
    data_dir, scores = ablate.prepare(a, P, runs, offline)
    evaluate.load_encoder(data_dir, data.load_dataset(data_dir, "test"), data.pick_device(a.device),
                          steps=P["encoder_steps"])
    guide_flags, fraction = GUIDE[a.preset]
    guide = os.path.join(runs, "online", "guide", "model.pt")
    if not os.path.exists(guide):
        ablate.stage(train_t2i, ["--data", data_dir, "--out", os.path.dirname(guide), "--steps",
                                 str(max(1, round(P["steps"] * fraction))), "--batch-size", str(P["batch_size"]),
                                 "--device", a.device, "--resume", "--grid-every", "0"] + guide_flags)
    seeds, threads = list(range(a.seeds or P["seeds"])), 1 if workers > 1 else torch.get_num_threads()
    jobs = ablate.make_jobs(a, P, runs, data_dir, scores, [(None, None, 1.0)] * len(MODES) + offline, seeds, threads)
    for i, mode in enumerate(m for m in MODES for _ in seeds):  # the first len(MODES) x seeds jobs: online ones
        jobs[i].update(name=MODES[mode], method=MODES[mode], extra=["--online", mode] + (
            [] if mode == "none" else ["--reference", guide, "--temperature", str(TEMPERATURE)]))
    for j in jobs:  # every run in its own folder, with the guide for autoguided sampling and an FID-vs-time curve
        j.update(out=os.path.join(runs, "online", f"{j['name']}_s{j['seed']}"), guide=guide, curve=True)
        j["method"] = j["name"]  # alchemist_shift_gsample_50
    with ablate.worker_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        rows = ablate.collect(jobs, {pool.submit(ablate.train_and_evaluate, j): i for i, j in enumerate(jobs)} if pool
                              else {})
    md = online_md(rows, P, a.preset, ablate.wall_clock(os.path.join(runs, "online"), time.time() - t0))
    ablate.write_csv(rows, os.path.join(out, "online.csv"), FIELDS)
    data.atomic_save(md, os.path.join(out, "online.md"))
    evaluate.line_plot(fid_vs_seconds(rows), os.path.join(out, "online_fid_vs_seconds.png"),
                       "FID vs training time, mean over seeds (scoring included)", xlabel="training seconds")
    print(md + f"\nwrote {out}/online.csv, online.md, online_fid_vs_seconds.png")


if __name__ == "__main__":
    main()
