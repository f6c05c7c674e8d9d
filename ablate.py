"""ablate.py -- the paper's ablations on the shapes set, in one command: every stage, every method, several seeds.

Reads:   nothing (it makes its own data); re-run, it reads back what it already made
Writes:  RUNS/ (default runs/ablate_<preset>): the data, the proxy, the raters, the subsets and every trained model,
         each written by the stage script that owns it; OUT/ (default results/<preset>):
           results.csv      one row per run: method, keep, seed, fid, kid_mean, clip_score, geneval_overall, steps, ...
           results.md       mean +- std over seeds, laid out like the paper's Tables 1 and 4, and the paper's claims
           selection.csv    keep rate per defect type per method (what each selection throws away)
           fid_curves.png   FID against training step, mean over seeds
           samples.png      samples of a few methods for the same prompts; samples/<run>.png for every method
Run:     python ablate.py [--preset quick|paper] [--seeds 3] [--workers 2] [--methods full,random_50,...]
Reproduces the shape of Alchemist's Tables 1 and 4 (arXiv 2512.16905): Alchemist's subset against the full set and
random subsets at keep 20% and 50%, its pruning strategies, its group MLP, the meta-gradient variants and heuristic
scorers, all trained for the same number of steps.

The stages run through the very commands a reader would type (each script's main(argv), printed as it runs):
  data.py -> proxy.py -> metagrad.py (+ rater.py) per rater; prune.py --score per heuristic
          -> prune.py --strategy per (scorer, strategy, keep, seed) -> train_t2i.py -> evaluate.py
Resumable: a finished step is recognised by its output, written last (a run by its metrics.json) and skipped, so a
grid killed at any point continues where it stopped; one grid at a time holds a runs folder (RUNS/ablate.lock).
Training runs go to --workers processes at once (on the CPU, two one-thread processes train tiny models faster than
one two-thread process; on CUDA the preset's gpu_workers processes share the one GPU, which a single small model
leaves idle between kernel launches; each run's output goes to RUNS/train/<run>/run.log).
"""
import argparse
import concurrent.futures as cf
import contextlib
import csv
import io
import json
import multiprocessing
import os
import platform
import shutil
import threading
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

import data
import evaluate
import metagrad
import prune
import proxy
import rater
import train_t2i

KEEPS = [0.2, 0.5]
STRATEGIES = ["top_k", "block", "gsample", "shift_gsample", "ccs"]
HEURISTICS = ["clarity", "frequency", "edge_density", "loss"]
RATERS = {  # rater name -> metagrad.py flags
    "alchemist": [], "alchemist_nogroup": ["--no-group"], "simplified": ["--simplified"], "exact": ["--method", "exact"]}


def paper_grid():
    """Every (scorer, strategy, keep) of the issue's grid; scorer None = the full set, "random" = a uniform subset."""
    grid = [("oracle", None, None), (None, None, 1.0)]
    for keep in KEEPS:
        grid += [("random", "random", keep)] + [("alchemist", s, keep) for s in STRATEGIES]
        grid += [("alchemist_nogroup", "shift_gsample", keep), ("simplified", "shift_gsample", keep),
                 ("exact", "shift_gsample", keep)]
        grid += [(h, s, keep) for h in HEURISTICS for s in ["shift_gsample", "top_k"]]
    return grid


# quick: the runs that test the five claims of results.md; the oracle (the clean rows) is the ceiling
QUICK_GRID = [("oracle", None, None), (None, None, 1.0), ("random", "random", 0.5), ("alchemist", "shift_gsample", 0.5),
              ("alchemist_nogroup", "shift_gsample", 0.5), ("alchemist", "shift_gsample", 0.2),
              ("alchemist", "top_k", 0.2), ("alchemist", "gsample", 0.2)]

PRESETS = {
    # one minute on 2 CPU cores: every stage once, on 200 rows, to see that everything runs and where it writes
    "tiny": dict(size=16, max_objects=1, n_train=200, n_val=40, n_test=40, proxy=["--preset", "tiny"], primary_warmup=10,
                 meta_steps=10, target=["--preset", "tiny"], steps=40, batch_size=16, n_samples=32, sample_steps=4,
                 cfg=1.0, curve_points=2, encoder_steps=40, grid=QUICK_GRID[:4], workers=2, seeds=1,
                 guide=["--preset", "tiny", "--width", "8"], guide_fraction=0.25, guidance=2.0, online_temperature=0.01),
    # 2 CPU cores, under 20 minutes: 16x16 one-object scenes, 2000 rows (README: why these sizes). Proxy and target
    # are the same 0.1M-parameter DiT (width 64, depth 2, one head), bf16 on CPUs that have it; 1000 steps of 64
    # teach the oracle to draw the caption's scene (GenEval ~0.8, CLIP ~0.95, sampled without CFG).
    "quick": dict(size=16, max_objects=1, n_train=2000, n_val=300, n_test=300, proxy=["--preset", "quick"],
                  primary_warmup=400, meta_steps=250, target=["--preset", "quick"], steps=1000, batch_size=64,
                  n_samples=200, sample_steps=16, cfg=1.0, curve_points=4, encoder_steps=400, grid=QUICK_GRID,
                  workers=2, seeds=3, guide=["--preset", "quick", "--width", "32"], guide_fraction=0.25,
                  guidance=2.0, online_temperature=0.01),
    # one GPU: the default 32x32 set, the cpu-preset proxy (3000 steps), the cpu-preset target (3000 steps);
    # gpu_workers runs train at once on the one GPU (spawned processes; bench/gpu_check.sh measures 1, 4 and 8)
    "paper": dict(size=32, max_objects=2, n_train=8000, n_val=1000, n_test=1000, proxy=["--preset", "cpu"],
                  primary_warmup=1000, meta_steps=1000, target=["--preset", "cpu"], steps=3000, batch_size=64,
                  n_samples=1000, sample_steps=32, cfg=3.0, curve_points=6, encoder_steps=600, grid=paper_grid(),
                  workers=1, seeds=3, guide=["--preset", "cpu", "--width", "64", "--depth", "4"],
                  guide_fraction=1 / 16, guidance=2.0, online_temperature=0.01, gpu_workers=8),
}
CURVES = [(None, None, 1.0), ("random", "random", 0.5), ("alchemist", "shift_gsample", 0.5)]  # FID-vs-step runs


def method_name(scorer, strategy):
    """'full', 'oracle', 'random', 'alchemist_shift_gsample', ..."""
    return "full" if scorer is None else scorer if scorer in ("random", "oracle") else f"{scorer}_{strategy}"


def run_name(scorer, strategy, keep):
    """'full', 'oracle', 'random_50', 'alchemist_shift_gsample_20', ..."""
    if scorer in (None, "oracle"):
        return method_name(scorer, strategy)
    return f"{method_name(scorer, strategy)}_{int(round(keep * 100))}"


def subset_path(runs, scorer, strategy, keep, seed):
    """Where one run's subset lives; the oracle's (the clean rows) is the same for every seed."""
    name = "oracle.npy" if scorer == "oracle" else f"{run_name(scorer, strategy, keep)}_s{seed}.npy"
    return os.path.join(runs, "subsets", name)


_LOCKS = {}  # runs folder -> the lock file this process holds


def lock_runs(runs):
    """Hold RUNS/ablate.lock while this process lives, so that two grids never write one runs folder: a second one
    stops with one line naming the holder. The lock is the OS's (flock), dropped when its holder dies, even by
    kill -9: a lock file left by a dead process is simply taken over."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        return
    path = os.path.realpath(os.path.join(runs, "ablate.lock"))
    if path in _LOCKS:  # held by this very process (ablate.main called again, as the tests do)
        return
    os.makedirs(runs, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if not isinstance(e, BlockingIOError):  # not held by another process: the folder cannot be locked at all
            data.fail(f"{path}: cannot lock the runs folder ({e.strerror}); pass another --runs")
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        data.fail(f"{runs} is in use by another ablate.py (process {holder}); wait for it to end or pass another "
                  "--runs")
    f.truncate(0)
    f.write(f"{os.getpid()} on {platform.node()}\n")
    f.flush()
    _LOCKS[path] = f


def exit_with_parent(parent):
    """Worker initializer: a worker whose grid process is gone (even by kill -9) exits at once, instead of training
    the queued runs on its own and then waiting forever (and the resource tracker, left alone, exits after it)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def worker_pool(workers):
    """Training processes: fresh interpreters (spawn), so that no state is shared by accident, that die with us."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=exit_with_parent, initargs=(os.getpid(),))


def evaluated(path):
    """An evaluation is done when its metrics file is there, which evaluate.py writes after its picture; a folder from
    before that order may hold the metrics without the picture: evaluated again."""
    return os.path.exists(path) and os.path.exists(os.path.splitext(path)[0] + "_samples.png")


def stage(script, argv, quiet=False):
    """Run one stage's command in this process, printing it the way a reader would type it."""
    if not quiet:
        tqdm.write(f"$ python {script.__name__}.py {' '.join(argv)}")
    script.main(argv)


# ----------------------------------------------------------------------------------------------------------------
# The stages before training: data, proxy, raters, heuristic scores, subsets

def prepare(a, P, runs):
    """Everything that each training run needs, made once, each step skipped when its output exists. Returns the
    data folder and {scorer: scores.npy}."""
    d, scores = os.path.join(runs, "data"), {}
    if not os.path.exists(os.path.join(d, "test.pt")):
        stage(data, ["--out", d, "--size", str(P["size"]), "--n-train", str(P["n_train"]), "--n-val", str(P["n_val"]),
                     "--n-test", str(P["n_test"]), "--max-objects", str(P["max_objects"]), "--seed", "0"])
    ref = os.path.join(runs, "proxy", "proxy.pt")
    if not os.path.exists(os.path.join(runs, "proxy", "proxy_report.json")):
        stage(proxy, ["--data", d, "--out", os.path.dirname(ref), "--resume", "--device", a.device] + P["proxy"])
    needed = {scorer for scorer, _, _ in P["grid"]} - {None, "random", "oracle"}
    warm = os.path.join(runs, "rate_alchemist", "primary_warm.pt")  # one primary warm-up, shared by every rater
    for name in [r for r in RATERS if r in needed]:
        out = os.path.join(runs, f"rate_{name}")
        scores[name] = os.path.join(out, "scores.npy")
        if os.path.exists(scores[name]):
            continue
        shared = ["--primary", warm] if os.path.exists(warm) else ["--primary-warmup", str(P["primary_warmup"])]
        stage(metagrad, ["--data", d, "--proxy", ref, "--out", out, "--steps", str(P["meta_steps"]), "--resume",
                         "--device", a.device] + shared + RATERS[name])
        stage(rater, ["--data", d, "--rater", os.path.join(out, "rater.pt"), "--out", scores[name], "--device", a.device])
    scores["random"] = os.path.join(runs, "scores", "uniform.npy")  # random ignores the scores: all equal
    if not os.path.exists(scores["random"]):
        data.atomic_save(np.zeros(len(data.load_dataset(d, "train")["defect"]), np.float32), scores["random"])
    for name in [h for h in HEURISTICS if h in needed]:
        scores[name] = os.path.join(runs, "scores", f"{name}.npy")
        if not os.path.exists(scores[name]):
            stage(prune, ["--data", d, "--score", name, "--out", scores[name], "--device", a.device] +
                  (["--proxy", ref] if name in ("loss", "grad_norm") else []))
    return d, scores


def subset_for(runs, d, scores, scorer, strategy, keep, seed):
    """The subset .npy of one run (None for the full set); the seed also seeds the sampling strategies. The oracle
    trains on the rows whose ground truth is clean: the ceiling that a perfect selection could reach."""
    if scorer is None:
        return None
    path = subset_path(runs, scorer, strategy, keep, seed)
    if scorer == "oracle":
        if not os.path.exists(path):
            data.atomic_save(np.flatnonzero(data.load_dataset(d, "train")["defect"].numpy() == 0), path)
    elif not os.path.exists(path):
        stage(prune, ["--scores", scores[scorer], "--strategy", strategy, "--keep", str(keep), "--seed", str(seed),
                      "--out", path, "--data", d], quiet=True)
    return path


# ----------------------------------------------------------------------------------------------------------------
# One training run (in a worker process): train_t2i.py, then evaluate.py on the final model and on its snapshots

def train_and_evaluate(job):
    """Train one model and evaluate it; everything it prints goes to RUN/run.log. Returns the metrics row."""
    torch.set_num_threads(job["threads"])
    out = job["out"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "run.log"), "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        P, every = job["P"], max(1, job["P"]["steps"] // job["P"]["curve_points"])
        argv = ["--data", job["data"], "--out", out, "--steps", str(P["steps"]), "--batch-size", str(P["batch_size"]),
                "--seed", str(job["seed"]), "--device", job["device"], "--resume", "--grid-every", str(P["steps"]),
                "--snapshot-every", str(every if job["curve"] else 0)] + P["target"]
        if job["subset"]:
            argv += ["--subset", job["subset"]]
        argv += job.get("extra", [])  # the online grid: --online ..., --reference ...
        if not os.path.exists(os.path.join(out, "trained.json")):  # train_t2i.py --resume ends a killed run
            stage(train_t2i, argv)
            with open(os.path.join(out, "log.csv")) as f:
                data.atomic_save({"train_seconds": float(list(csv.DictReader(f))[-1]["seconds"])},
                                 os.path.join(out, "trained.json"))
        ev = ["--data", job["data"], "--n-samples", str(P["n_samples"]), "--steps", str(P["sample_steps"]),
              "--encoder-steps", str(P["encoder_steps"]), "--cfg", str(P["cfg"]), "--device", job["device"]]
        curve = {}
        for n in range(every, P["steps"], every) if job["curve"] else []:
            path = os.path.join(out, "curve", f"step{n}.json")
            if not evaluated(path):
                stage(evaluate, ev + ["--model", os.path.join(out, "snapshots", f"step{n}.pt"), "--out", path])
            curve[n] = json.load(open(path))["fid"]
        timing = json.load(open(os.path.join(out, "trained.json")))
        if not evaluated(os.path.join(out, "metrics.json")):  # a finished run's marker, written last
            stage(evaluate, ev + ["--model", os.path.join(out, "model.pt"), "--out", os.path.join(out, "metrics.json")])
        m = json.load(open(os.path.join(out, "metrics.json")))
        eval_seconds = m.get("eval_seconds", timing.get("eval_seconds", 0.0))  # measured by evaluate.py itself
        if job.get("guide"):  # the online grid: the same model sampled with autoguidance too
            path = os.path.join(out, "metrics_autoguided.json")
            if not evaluated(path):
                stage(evaluate, ev + ["--model", os.path.join(out, "model.pt"), "--out", path, "--guide", job["guide"],
                                      "--guidance", str(P["guidance"]), "--cfg", "1"])  # autoguidance alone, as ONLINE.md
            m["fid_autoguided"] = json.load(open(path))["fid"]
    curve[P["steps"]] = m["fid"]
    with open(os.path.join(out, "log.csv")) as f:  # samples seen and seconds at each curve point
        log = {int(r["step"]): r for r in csv.DictReader(f)}
    clock = {n: [int(log[n]["samples"]), float(log[n]["seconds"])] for n in curve if n in log}
    return dict(m, train_seconds=round(timing["train_seconds"], 1), eval_seconds=round(eval_seconds, 1),
                curve=json.dumps(curve), clock=json.dumps(clock),
                score_seconds=float(log[max(log)].get("score_seconds") or 0.0))


# ----------------------------------------------------------------------------------------------------------------
# The tables, the claims and the pictures

FIELDS = ["method", "keep", "seed", "fid", "kid_mean", "clip_score", "geneval_overall", "recovered", "recovered_geneval",
          "steps", "train_seconds", "eval_seconds", "n_rows", "noise_rate", "watermark_rate", "curve"]


def mean_std(rows, method, keep, key="fid"):
    v = [float(r[key]) for r in rows if r["method"] == method and abs(float(r["keep"]) - keep) < 1e-9 and r[key] != ""]
    return (float(np.mean(v)), float(np.std(v)), len(v)) if v else (float("nan"), float("nan"), 0)


def fmt(rows, method, keep, key="fid", digits=3):
    m, s, n = mean_std(rows, method, keep, key)
    if n and np.isnan(m):
        return "–"
    return "–" if n == 0 else f"{m:.{digits}f} ± {s:.{digits}f}"


SPREAD = {"fid": 0.0, "geneval_overall": 0.0}  # the least difference that counts: see compare()


def compare(rows, a, b, key):
    """Is run a = (method, keep) better than run b on `key` (lower FID, higher GenEval)? A difference counts only
    where it exceeds twice the larger seed std of the two (and SPREAD, the run-to-run spread measured across
    thread counts, README): "better", "worse" or "tie". Returns (verdict, text)."""
    (ma, sa, na), (mb, sb, nb) = mean_std(rows, *a, key), mean_std(rows, *b, key)
    if not (na and nb):
        return "not measured", "not measured"
    gain = (mb - ma) if key == "fid" else (ma - mb)
    spread = 2 * max(sa, sb, SPREAD.get(key, 0.0))
    verdict = "better" if gain > spread else "worse" if gain < -spread else "tie"
    digits = 4 if key == "fid" else 2
    return verdict, f"{ma:.{digits}f} vs {mb:.{digits}f} ({verdict}: difference {abs(ma - mb):.{digits}f}, " \
                    f"spread {spread:.{digits}f})"


def recovered(rows, method, keep):
    """'x% / y%': the mean share of the oracle's gain that a run recovers, on FID and on GenEval."""
    shares = [mean_std(rows, method, keep, key)[0] for key in ("recovered", "recovered_geneval")]
    return " / ".join("–" if np.isnan(v) else f"{100 * v:.0f}%" for v in shares)


def claims(rows):
    """The paper's five claims, each decided on FID and on GenEval (mean over seeds), with the share of the oracle's
    gain recovered (FID / GenEval). A verdict needs the difference to exceed the spread (compare)."""
    A50, A20, R50, FULL = ("alchemist_shift_gsample", 0.5), ("alchemist_shift_gsample", 0.2), ("random", 0.5), ("full", 1.0)
    TOP20, G20, NG50 = ("alchemist_top_k", 0.2), ("alchemist_gsample", 0.2), ("alchemist_nogroup_shift_gsample", 0.5)

    def claim(text, a, b, want=("better",)):
        (vf, tf), (vg, tg) = compare(rows, a, b, "fid"), compare(rows, a, b, "geneval_overall")
        vs, want = {vf, vg}, set(want)
        verdict = ("not measured" if "not measured" in vs else "holds" if vs <= want else
                   "mixed (better on one metric, worse on the other)" if "worse" in vs and vs & want else
                   "does not hold" if "worse" in vs else "holds on one metric only (a tie on the other)" if vs & want
                   else "not decided (a tie within the spread)")
        return f"{text}: FID {tf}; GenEval {tg}: **{verdict}**"

    out = [claim("1. Alchemist 50% beats Full", A50, FULL) +
           f"; recovered (FID / GenEval): Alchemist 50% {recovered(rows, *A50)}, Random 50% {recovered(rows, *R50)}",
           claim("2. Alchemist 20% matches Random 50%", A20, R50, want=("better", "tie")) +
           f"; recovered: Alchemist 20% {recovered(rows, *A20)}",
           claim("3a. Shift-Gsample beats Top-K (20%)", A20, TOP20) + f"; recovered: Top-K {recovered(rows, *TOP20)}",
           claim("3b. Shift-Gsample beats Gsample (20%)", A20, G20) + f"; recovered: Gsample {recovered(rows, *G20)}",
           claim("4. The Group MLP helps (Shift-Gsample 50%)", A50, NG50) +
           f"; recovered without it: {recovered(rows, *NG50)}"]
    ca, cr = _mean_curve(rows, *A50), _mean_curve(rows, *R50)
    if ca and cr:
        target = cr[max(cr)]
        reach = [n for n in sorted(ca) if ca[n] <= target + 2 * mean_std(rows, *R50)[1]]
        out.append(f"5. Alchemist 50% reaches Random 50%'s final FID ({target:.4f} at step {max(cr)}, within its seed "
                   f"spread) " + (f"at step {reach[0]}: {max(cr) / reach[0]:.1f}x fewer steps" if reach else
                                  "at no measured step") + " (mean FID by step, Alchemist "
                   + ", ".join(f"{n}: {v:.4f}" for n, v in sorted(ca.items())) + "; Random "
                   + ", ".join(f"{n}: {v:.4f}" for n, v in sorted(cr.items())) + ")")
    else:
        out.append("5. Alchemist reaches Random's final quality in fewer steps: not measured (no FID curves)")
    return out


def _mean_curve(rows, method, keep):
    """{step: mean FID over seeds} from the runs' FID-versus-step curves."""
    curves = [json.loads(r["curve"]) for r in rows if r["method"] == method and abs(float(r["keep"]) - keep) < 1e-9
              and r.get("curve")]
    curves = [c for c in curves if len(c) > 1]
    if not curves:
        return {}
    steps = sorted(set.intersection(*[set(c) for c in curves]), key=int)
    return {int(n): float(np.mean([c[n] for c in curves])) for n in steps}


def results_md(rows, P, preset, seconds):
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keeps = sorted({float(r["keep"]) for r in rows if float(r["keep"]) < 1 and r["method"] != "oracle"})
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [f"# Ablation results, preset `{preset}`", "",
             f"Mean ± std over seeds {seeds}; every model trained {P['steps']} steps of {P['batch_size']} "
             f"({P['size']}x{P['size']} images, {P['n_train']} training rows); FID and KID on the evaluator's "
             f"features, {P['n_samples']} samples ({P['sample_steps']} sampler steps, CFG {P['cfg']:g}). Lower FID/KID and "
             f"higher CLIP score / GenEval are better. Grid wall time {seconds / 60:.1f} min (all invocations) on {platform.node()} "
             f"({os.cpu_count()} CPUs, {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}), "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "## Table 1: subsets against the full set (FID)", "",
             "| method | " + " | ".join(f"keep {int(k * 100)}%" for k in keeps) + " | full set, or the oracle's clean rows |",
             "|---|" + "---|" * (len(keeps) + 1)]
    for m in methods:
        own = {float(r["keep"]) for r in rows if r["method"] == m}  # the oracle keeps the clean share
        cells = [fmt(rows, m, k, "fid", 4) if m != "oracle" else "–" for k in keeps]
        cells.append(fmt(rows, m, own.pop(), "fid", 4) if m in ("full", "oracle") else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## All figures", "", "recovered: the share of the oracle's gain over the full set that a run "
              "recovers, (FID_full - FID) / (FID_full - FID_oracle), paired by seed; the same on GenEval.", "",
              "| method | keep | FID | KID | CLIP score | GenEval | recovered (FID) | recovered (GenEval) | noise in samples |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        for k in sorted({float(r["keep"]) for r in rows if r["method"] == m}):
            lines.append(f"| {m} | {int(round(k * 100))}% | {fmt(rows, m, k, 'fid', 4)} | {fmt(rows, m, k, 'kid_mean', 4)} | "
                         f"{fmt(rows, m, k, 'clip_score')} | {fmt(rows, m, k, 'geneval_overall', 2)} | "
                         f"{fmt(rows, m, k, 'recovered', 2)} | {fmt(rows, m, k, 'recovered_geneval', 2)} | "
                         f"{fmt(rows, m, k, 'noise_rate', 3)} |")
    lines += ["", "## The paper's claims, here", ""] + claims(rows)
    return "\n".join(lines) + "\n"


def selection_rows(runs, d, grid, seeds):
    """Keep rate per defect type of every subset (seed 0): what each method throws away."""
    train = data.load_dataset(d, "train")
    defect, names = train["defect"].numpy(), train["defect_names"]
    out = []
    for scorer, strategy, keep in grid:
        if scorer is None:
            continue
        rows = np.load(subset_path(runs, scorer, strategy, keep, seeds[0]))
        kept = np.zeros(len(defect), bool)
        kept[rows] = True
        out.append({"method": method_name(scorer, strategy), "keep": keep,
                    **{n: round(float(kept[defect == k].mean()), 3) for k, n in enumerate(names) if (defect == k).any()}})
    return out


def line_plot(curves, path, title, xlabel="training step", width=640, height=360):
    """{label: {step: value}} -> a PNG line chart (Pillow only)."""
    pts = [(n, v) for c in curves.values() for n, v in c.items()]
    if not pts:
        return
    x0, x1 = 0, max(1, max(n for n, _ in pts))
    y0, y1 = min(v for _, v in pts), max(v for _, v in pts)
    y0, y1 = (y0, y1) if y1 > y0 else (y0 - 1, y1 + 1)
    L, T, W, H = 60, 30, width - 200, height - 70
    img = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(img)
    pen.text((L, 8), title, fill="black")
    pen.rectangle([L, T, L + W, T + H], outline="black")
    to = lambda n, v: (L + W * (n - x0) / (x1 - x0), T + H - H * (v - y0) / (y1 - y0))
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        pen.text((4, to(0, v)[1] - 6), f"{v:.3f}", fill="black")
    for n in sorted({n for n, _ in pts}):
        pen.text((to(n, y0)[0] - 10, T + H + 6), str(n), fill="black")
    pen.text((L + W // 2 - 20, T + H + 22), xlabel, fill="black")
    for i, (label, c) in enumerate(curves.items()):
        colour = rater.PALETTE[(i + 1) % len(rater.PALETTE)]
        xy = [to(n, c[n]) for n in sorted(c)]
        pen.line(xy, fill=colour, width=2) if len(xy) > 1 else None
        for x, y in xy:
            pen.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        pen.text((L + W + 12, T + 16 * i), label, fill=colour)
    data.atomic_save(img, path)


SHOWN = {"oracle": "oracle (clean rows)", "full": "full set", "random_50": "random 50%",  # samples.png's rows
         "alchemist_shift_gsample_50": "Alchemist 50%", "alchemist_top_k_20": "Alchemist Top-K 20%"}


def samples_figure(jobs, test, P, path, n=8):
    """The same n test prompts drawn by each run's model (seed 0), one row per method under the real image, each
    prompt's caption below its column: the difference between methods at a glance."""
    if not jobs:  # a grid cut by --methods to none of the shown runs
        return
    jobs = sorted(jobs, key=lambda j: list(SHOWN).index(j["name"]))
    rows = [test["images"][:n]]
    for j in jobs:
        model, _ = proxy.load_proxy(os.path.join(j["out"], "model.pt"))
        x = proxy.sample_images(model, test["tokens"][:n], steps=P["sample_steps"], cfg=P["cfg"], seed=0)
        rows.append(((x + 1) * 127.5).round().clamp(0, 255).byte())
    data.captioned_grid([[r[i] for r in rows] for i in range(n)], test["captions"][:n], path, cols=n, cell_w=150,
                        labels=["real image"] + [SHOWN[j["name"]] for j in jobs],
                        footer=f"samples of each method's seed-{jobs[0]['seed']} model, "
                               f"{P['sample_steps']} Euler steps, CFG {P['cfg']:g}")


# ----------------------------------------------------------------------------------------------------------------
# The online grid (--online): JEST / early AJEST against uniform batches and the offline Alchemist subset

ONLINE = {"uniform": ["--online", "none"], "jest": ["--online", "jest"], "early_ajest": ["--online", "early_ajest"]}


def online_jobs(a, P, runs, d, scores, seeds, workers):
    """One guide (smaller, trained for guide_fraction of the steps: the reference of JEST/AJEST and the autoguidance
    guide, ONLINE.md), then every online method and the offline Alchemist 50% subset, each seed; all evaluated with
    and without autoguidance."""
    guide_dir = os.path.join(runs, "online", "guide")
    guide = os.path.join(guide_dir, "model.pt")
    if not os.path.exists(os.path.join(guide_dir, "trained.json")):
        stage(train_t2i, ["--data", d, "--out", guide_dir, "--steps", str(max(1, round(P["steps"] * P["guide_fraction"]))),
                          "--batch-size", str(P["batch_size"]), "--device", a.device, "--resume", "--grid-every", "0"]
              + P["guide"])
        data.atomic_save({"train_seconds": 0.0}, os.path.join(guide_dir, "trained.json"))
    jobs = []
    for method in list(ONLINE) + ["alchemist_shift_gsample_50"]:
        for seed in seeds:
            offline = method not in ONLINE
            extra = [] if offline or method == "uniform" else ONLINE[method] + [
                "--reference", guide, "--temperature", str(P["online_temperature"])]
            jobs.append(dict(name=method, method=method, keep=0.5 if offline else 1.0, seed=seed, data=d, P=P,
                             subset=subset_for(runs, d, scores, "alchemist", "shift_gsample", 0.5, seed) if offline
                             else None, device=a.device, out=os.path.join(runs, "online", f"{method}_s{seed}"),
                             curve=True, extra=extra, guide=guide, threads=1 if workers > 1 else torch.get_num_threads()))
    return jobs


def online_md(rows, P, preset, seconds):
    """Equal samples (every run's end) and equal wall-clock time (each run at the time the fastest run took)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    mean = lambda m, k: float(np.mean([float(r[k]) for r in rows if r["method"] == m]))
    std = lambda m, k: float(np.std([float(r[k]) for r in rows if r["method"] == m]))
    budget = min(mean(m, "train_seconds") for m in methods)  # the cheapest method's training time
    lines = [f"# Online selection and autoguidance, preset `{preset}` ({P['steps']} steps of {P['batch_size']})",
             "", f"Mean ± std over seeds; FID on {P['n_samples']} samples (CFG {P['cfg']:g}; autoguided: no CFG, guide = a smaller "
             f"model trained {P['guide_fraction']:.3g} of the steps, weight {P['guidance']}). Grid wall time "
             f"{seconds / 60:.1f} min on {platform.node()}, {time.strftime('%Y-%m-%d')}.", "",
             "## At equal samples (every run saw the same number of kept samples)", "",
             "| method | FID | FID autoguided | CLIP score | GenEval | train seconds | of which scoring | s/step |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {mean(m, 'fid'):.3f} ± {std(m, 'fid'):.3f} | {mean(m, 'fid_autoguided'):.3f} ± "
                     f"{std(m, 'fid_autoguided'):.3f} | {mean(m, 'clip_score'):.3f} | {mean(m, 'geneval_overall'):.2f} | "
                     f"{mean(m, 'train_seconds'):.0f} | {mean(m, 'score_seconds'):.0f} | "
                     f"{mean(m, 'train_seconds') / P['steps']:.3f} |")
    lines += ["", f"## At equal wall-clock time ({budget:.0f} s of training, the cheapest method's)", "",
              "| method | FID at that time (last snapshot within it) | samples seen by then |", "|---|---|---|"]
    for m in methods:
        at = []
        for r in [r for r in rows if r["method"] == m]:
            curve, clock = json.loads(r["curve"]), json.loads(r["clock"])
            within = [int(n) for n in clock if clock[n][1] <= budget * 1.02 and n in curve]  # 2%: timing noise
            if within:
                n = str(max(within))
                at.append((curve[n], clock[n][0]))
        lines.append(f"| {m} | " + (f"{np.mean([f for f, _ in at]):.3f} ({len(at)} seeds) | "
                                    f"{np.mean([s for _, s in at]):.0f} |" if at else "no snapshot that early | – |"))
    return "\n".join(lines) + "\n"


def run_online(a, P, runs, out, d, scores, seeds, t0, workers):
    jobs = online_jobs(a, P, runs, d, scores, seeds, workers)
    rows = []
    with worker_pool(workers) as pool:
        futures = {pool.submit(train_and_evaluate, job): job for job in jobs}
        for f in tqdm(cf.as_completed(futures), total=len(jobs), desc="online runs"):
            job, m = futures[f], f.result()
            rows.append(dict(method=job["method"], seed=job["seed"], **{k: m[k] for k in [
                "fid", "fid_autoguided", "clip_score", "geneval_overall", "train_seconds", "score_seconds", "curve",
                "clock"]}))
    rows.sort(key=lambda r: (list(ONLINE).index(r["method"]) if r["method"] in ONLINE else 9, r["seed"]))
    write_csv(rows, os.path.join(out, "online.csv"))
    md = online_md(rows, P, a.preset, wall_clock(os.path.join(runs, "online"), time.time() - t0))
    data.atomic_save(md, os.path.join(out, "online.md"))
    curves = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        pts = {}
        for r in [r for r in rows if r["method"] == m]:
            curve, clock = json.loads(r["curve"]), json.loads(r["clock"])
            for n in curve:
                if n in clock:
                    pts.setdefault(n, []).append((clock[n][1], curve[n]))
        curves[m] = {round(float(np.mean([s for s, _ in v]))): float(np.mean([f for _, f in v])) for v in pts.values()}
    line_plot(curves, os.path.join(out, "online_fid_vs_seconds.png"), "FID vs training time, mean over seeds (scoring included)",
              xlabel="training seconds")
    print(md)
    print(f"wrote {out}/online.csv, online.md, online_fid_vs_seconds.png")


# ----------------------------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description="Run the ablation grid (data, proxy, raters, subsets, training, "
                                            "evaluation) and write the results table, claims and pictures.")
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="tiny: every stage once in about a minute; quick: 16x16, the grid of the claims, under 20 min "
                        "on 2 CPU cores; paper: the full grid for one GPU")
    p.add_argument("--seeds", type=int, help="training seeds per method, re-drawing each subset (default: the "
                                              "preset's: tiny 1, quick and paper 3)")
    p.add_argument("--workers", type=int, help="training runs at once (default: the preset's workers; on CUDA its "
                                               "gpu_workers, processes sharing the GPU, or 1)")
    p.add_argument("--methods", help="only these runs of the preset's grid, comma-separated run names, e.g. "
                                     "full,random_50,alchemist_shift_gsample_50 (default: the whole grid)")
    p.add_argument("--runs", help="working folder (default runs/ablate_<preset>); re-running resumes from it")
    p.add_argument("--out", help="results folder (default results/<preset>)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--online", action="store_true",
                   help="instead of the offline grid: uniform batches, JEST and early AJEST (reference = a smaller "
                        "guide model), and the offline Alchemist 50%% subset, with and without autoguidance, at "
                        "equal samples and at equal wall-clock time (writes online.csv, online.md)")
    p.error = data.arg_error
    a = p.parse_args(argv)
    if (a.seeds is not None and a.seeds < 1) or (a.workers is not None and a.workers < 1):
        data.fail("--seeds and --workers must be at least 1")
    P = grid_of(PRESETS[a.preset], a.methods, a.preset, a.online)
    a.seeds = a.seeds or P["seeds"]
    runs, out = a.runs or os.path.join("runs", f"ablate_{a.preset}"), a.out or os.path.join("results", a.preset)
    try:
        data.check_out(runs, flag="--runs")
        data.check_out(out)
    except data.DataError as e:
        data.fail(str(e))
    cuda = data.pick_device(a.device).type == "cuda"
    workers = a.workers or (P.get("gpu_workers", 1) if cuda else P["workers"])
    lock_runs(runs)  # one grid per runs folder
    t0 = time.time()
    d, scores = prepare(a, P, runs)
    test = data.load_dataset(d, "test")
    evaluate.load_encoder(d, test, data.pick_device(a.device), steps=P["encoder_steps"])  # train the cache once, here
    seeds = list(range(a.seeds))
    if a.online:
        return run_online(a, P, runs, out, d, scores, seeds, t0, workers)
    jobs, grid = [], resolve_oracle(P["grid"], d)
    for scorer, strategy, keep in grid:
        for seed in seeds:
            name = run_name(scorer, strategy, keep)
            jobs.append(dict(name=name, method=method_name(scorer, strategy), keep=keep, seed=seed, data=d, P=P,
                             subset=subset_for(runs, d, scores, scorer, strategy, keep, seed), device=a.device,
                             out=os.path.join(runs, "train", f"{name}_s{seed}"), curve=(scorer, strategy, keep) in CURVES,
                             threads=1 if workers > 1 else torch.get_num_threads()))
    rows = []
    n_rows = lambda job: len(np.load(job["subset"])) if job["subset"] else P["n_train"]
    print(f"{len(jobs)} training runs ({len(grid)} methods x {len(seeds)} seeds), {workers} at a time; "
          f"each logs to its RUNS/train/<run>/run.log")
    with worker_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        if pool:
            futures = {pool.submit(train_and_evaluate, job): job for job in jobs}
            results = ((futures[f], f.result) for f in cf.as_completed(futures))
        else:
            results = ((job, lambda job=job: train_and_evaluate(job)) for job in jobs)
        for job, result in tqdm(results, total=len(jobs), desc="ablation runs"):
            try:
                m = result()
            except SystemExit as e:  # a stage refused its input: it wrote why to the run's log
                data.fail(f"{job['out']}: a stage exited with code {e.code}; see {job['out']}/run.log")
            rows.append({"method": job["method"], "keep": job["keep"], "seed": job["seed"], "fid": m["fid"],
                         "kid_mean": m["kid_mean"], "clip_score": m["clip_score"],
                         "geneval_overall": m["geneval_overall"], "steps": P["steps"],
                         "train_seconds": m["train_seconds"], "eval_seconds": m["eval_seconds"],
                         "n_rows": n_rows(job), "noise_rate": m.get("noise_rate", ""),
                         "watermark_rate": m.get("watermark_rate", ""), "curve": m["curve"]})
            tqdm.write(f"{job['name']} seed {job['seed']}: FID {m['fid']:.3f}, CLIP {m['clip_score']:.3f}, "
                       f"GenEval {m['geneval_overall']:.2f}")
    order = {(j["method"], j["keep"], j["seed"]): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["method"], r["keep"], r["seed"])])
    write_results(add_recovered(rows), runs, out, d, P, grid, a.preset, seeds, jobs, wall_clock(runs, time.time() - t0))


def resolve_oracle(grid, d):
    """The grid with the oracle's keep set to the clean share of the training rows, or without the oracle (and a
    note) where the data has no ground truth (an imported folder without "defect" labels)."""
    defect = data.load_dataset(d, "train")["defect"]
    if (defect == 0).all() or not (defect == 0).any():
        if any(scorer == "oracle" for scorer, _, _ in grid):
            print(f"note: {d} has no defect labels, so there is no oracle (the clean rows) to compare with")
        return [g for g in grid if g[0] != "oracle"]
    clean = round(float((defect == 0).float().mean()), 3)
    return [(s, st, clean if s == "oracle" else k) for s, st, k in grid]


def add_recovered(rows):
    """Each run's share of the oracle's gain that it recovers, paired by seed with the full set and the oracle:
    recovered = (FID_full - FID) / (FID_full - FID_oracle), recovered_geneval the same on GenEval (0 = no better
    than the full set, 1 = as good as training on the clean rows only)."""
    ref = {(r["method"], r["seed"]): r for r in rows if r["method"] in ("full", "oracle")}
    for r in rows:
        full, oracle = ref.get(("full", r["seed"])), ref.get(("oracle", r["seed"]))
        for key, col in [("fid", "recovered"), ("geneval_overall", "recovered_geneval")]:
            gap = float(full[key]) - float(oracle[key]) if full and oracle else 0.0
            r[col] = (float(full[key]) - float(r[key])) / gap if gap else ""
    return rows


def grid_of(P, methods, preset, online):
    """The preset with its grid cut to the run names in `methods` (comma-separated); unchanged when None."""
    if not methods:
        return P
    if online:
        data.fail("--methods cuts the offline grid; drop it with --online")
    names, wanted = [run_name(*g) for g in P["grid"]], methods.split(",")
    unknown = [m for m in wanted if m not in names]
    if unknown:
        data.fail(f"--methods: {', '.join(unknown)} not in the {preset} grid; choose from {', '.join(names)}")
    return dict(P, grid=[g for g in P["grid"] if run_name(*g) in wanted])


def write_csv(rows, path, fields=None):
    """A list of dicts as a CSV file, written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields or list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    data.atomic_save(buf.getvalue(), path)


def wall_clock(runs, seconds):
    """Wall-clock seconds of the grid over all its invocations (a resumed grid adds the time of each part)."""
    path = os.path.join(runs, "wall_seconds.json")
    total = (json.load(open(path))["seconds"] if os.path.exists(path) else 0.0) + seconds
    data.atomic_save({"seconds": total}, path)
    return total


def write_results(rows, runs, out, d, P, grid, preset, seeds, jobs, seconds):
    write_csv(rows, os.path.join(out, "results.csv"), FIELDS)
    rows = [{k: str(v) for k, v in r.items()} for r in rows]
    sel = selection_rows(runs, d, grid, seeds)
    write_csv(sel, os.path.join(out, "selection.csv"))
    md = results_md(rows, P, preset, seconds)
    md += "\n## What each selection keeps (seed 0): share of each defect type kept\n\n"
    md += "| method | keep | " + " | ".join(list(sel[0])[2:]) + " |\n|---|---|" + "---|" * (len(sel[0]) - 2) + "\n"
    md += "".join(f"| {r['method']} | {int(r['keep'] * 100)}% | " + " | ".join(f"{r[k]:.2f}" for k in list(r)[2:])
                  + " |\n" for r in sel)
    data.atomic_save(md, os.path.join(out, "results.md"))
    curves = {f"{m} {int(k * 100)}%": _mean_curve(rows, m, k) for m, k in
              [("full", 1.0), ("random", 0.5), ("alchemist_shift_gsample", 0.5)]}
    line_plot({k: v for k, v in curves.items() if v}, os.path.join(out, "fid_curves.png"),
              f"FID vs step, mean over {len(seeds)} seeds (lower is better)")
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    firsts = [j for j in jobs if j["seed"] == seeds[0]]
    for j in firsts:
        shutil.copyfile(os.path.join(j["out"], "metrics_samples.png"), os.path.join(out, "samples", f"{j['name']}.png"))
    samples_figure([j for j in firsts if j["name"] in SHOWN], data.load_dataset(d, "test"), P,
                   os.path.join(out, "samples.png"))
    print(md)
    print(f"wrote {out}/results.csv, results.md, selection.csv, fid_curves.png, samples.png, samples/ "
          f"({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
