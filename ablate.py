"""ablate.py -- the paper's ablations on the shapes set in one command: every stage, every method, several seeds.

Run:     python ablate.py [--preset tiny|quick|paper] [--seeds N] [--workers N] [--methods a,b,...]
Writes:  RUNS (default runs/ablate_<preset>): data, proxy, raters, subsets, models, each by the stage that owns it;
         OUT (default results/<preset>): results.csv (a row per run), results.md (every figure, the claims decided
         against the seed spread, what each subset keeps), selection.csv, fid_curves.png, samples.png
Alchemist's Tables 1 and 4 (arXiv 2512.16905), an oracle (the clean rows) as the ceiling. Each stage runs as the
command a reader would type (its main(argv), printed); a step is done when its output, written last, exists, so a
killed grid goes on where it stopped; one grid at a time holds a runs folder (RUNS/ablate.lock)."""
import argparse
import concurrent.futures as cf
import contextlib
import csv
import io
import json
import multiprocessing
import os
import platform
import threading
import time

import numpy as np
import torch
from tqdm import tqdm

import data
import evaluate
import metagrad
import prune
import proxy
import rater
import train_t2i

# ----------------------------------------------------------------------------------------------------------------
# The grids: (scorer, strategy, keep) per method. scorer None = the full set, "oracle" = its clean rows (keep: their
# share), "random" = a uniform subset; strategy "curriculum" = all rows, reweighted by rank bins over training.

KEEPS, STRATEGIES = [0.2, 0.5], ["top_k", "block", "gsample", "shift_gsample", "ccs"]
HEURISTICS = ["clarity", "frequency", "edge_density", "loss"]
RATERS = {"alchemist": [], "alchemist_nogroup": ["--no-group"], "simplified": ["--simplified"],
          "exact": ["--method", "exact"]}  # rater -> metagrad.py flags
QUICK_GRID = [("oracle", None, None), (None, None, 1.0), ("random", "random", 0.5), ("alchemist", "shift_gsample", 0.5),
              ("alchemist_nogroup", "shift_gsample", 0.5), ("alchemist", "shift_gsample", 0.2),
              ("alchemist", "top_k", 0.2), ("alchemist", "gsample", 0.2), ("alchemist", "curriculum", 1.0)]
PAPER_GRID = QUICK_GRID[:2] + QUICK_GRID[-1:] + [g for keep in KEEPS for g in (
    [("random", "random", keep)] + [("alchemist", s, keep) for s in STRATEGIES] +
    [(r, "shift_gsample", keep) for r in RATERS if r != "alchemist"] +
    [(h, s, keep) for h in HEURISTICS for s in ["shift_gsample", "top_k"]])]
CURVES = [(None, None, 1.0), ("random", "random", 0.5), ("alchemist", "shift_gsample", 0.5)]  # FID-vs-step runs

PRESETS = {
    # a minute on 2 CPU cores: every stage once, on 200 rows: that everything runs, and where it writes
    "tiny": dict(size=16, max_objects=1, n_train=200, n_val=40, n_test=40, proxy=["--preset", "tiny"],
                 primary_warmup=10, meta_steps=10, target=["--preset", "tiny"], steps=40, batch_size=16, n_samples=32,
                 sample_steps=4, cfg=1.0, curve_points=2, encoder_steps=40, grid=QUICK_GRID[:4], workers=2, seeds=1),
    # under 20 minutes on 2 CPU cores: 16x16 one-object scenes, 2000 rows, the quick DiT (README: why these sizes)
    "quick": dict(size=16, max_objects=1, n_train=2000, n_val=300, n_test=300, proxy=["--preset", "quick"],
                  primary_warmup=400, meta_steps=250, target=["--preset", "quick"], steps=1000, batch_size=64,
                  n_samples=200, sample_steps=16, cfg=1.0, curve_points=4, encoder_steps=400, grid=QUICK_GRID,
                  workers=2, seeds=3),
    # one GPU: the default 32x32 two-object set, the paper-preset DiTs; gpu_workers runs share the GPU
    "paper": dict(size=32, max_objects=2, n_train=8000, n_val=1000, n_test=1000, proxy=["--preset", "paper"],
                  primary_warmup=1000, meta_steps=1000, target=["--preset", "paper"], steps=3000, batch_size=64,
                  n_samples=1000, sample_steps=32, cfg=3.0, curve_points=6, encoder_steps=600, grid=PAPER_GRID,
                  workers=1, gpu_workers=8, seeds=3),
}


def method_name(scorer, strategy):
    """'full', 'oracle', 'random', 'alchemist_shift_gsample', 'alchemist_curriculum', ..."""
    return "full" if scorer is None else scorer if scorer in ("random", "oracle") else f"{scorer}_{strategy}"


def run_name(scorer, strategy, keep):
    """'full', 'oracle', 'random_50', 'alchemist_shift_gsample_20', 'alchemist_curriculum', ..."""
    whole = scorer in (None, "oracle") or strategy == "curriculum"
    return method_name(scorer, strategy) + ("" if whole else f"_{int(round(keep * 100))}")


def stage(script, argv, quiet=False):
    """Run one stage's command in this process, printing it (unless quiet) the way a reader would type it."""
    if not quiet:
        tqdm.write(f"$ python {script.__name__}.py {' '.join(argv)}")
    script.main(argv)


def prepare(a, P, runs, grid):
    """What the training runs need, each made once: the data folder, and {scorer: S.npy}."""
    data_dir, scores, dev = os.path.join(runs, "data"), {}, ["--device", a.device]
    if not os.path.exists(os.path.join(data_dir, "test.pt")):
        stage(data, ["--out", data_dir, "--size", str(P["size"]), "--n-train", str(P["n_train"]), "--n-val",
                     str(P["n_val"]), "--n-test", str(P["n_test"]), "--max-objects", str(P["max_objects"]), "--seed", "0"])
    ref, needed = os.path.join(runs, "proxy", "proxy.pt"), {scorer for scorer, _, _ in grid}
    if needed & {*RATERS, "loss", "grad_norm"} and not os.path.exists(os.path.join(runs, "proxy", "proxy_report.json")):
        stage(proxy, ["--data", data_dir, "--out", os.path.dirname(ref), "--resume"] + dev + P["proxy"])
    warm = os.path.join(runs, "rate_alchemist", "primary_warm.pt")  # one primary warm-up, shared by every rater
    for name in [r for r in RATERS if r in needed]:
        out = os.path.join(runs, f"rate_{name}")
        scores[name] = os.path.join(out, "scores.npy")
        if not os.path.exists(scores[name]):
            shared = ["--primary", warm] if os.path.exists(warm) else ["--primary-warmup", str(P["primary_warmup"])]
            stage(metagrad, ["--data", data_dir, "--proxy", ref, "--out", out, "--steps", str(P["meta_steps"]),
                             "--resume"] + dev + shared + RATERS[name])
            stage(rater, ["--data", data_dir, "--rater", os.path.join(out, "rater.pt"), "--out", scores[name]] + dev)
    scores["random"] = os.path.join(runs, "scores", "uniform.npy")  # random ignores the scores: all equal
    if not os.path.exists(scores["random"]):
        data.atomic_save(np.zeros(len(data.load_dataset(data_dir)["defect"]), np.float32), scores["random"])
    for name in [h for h in HEURISTICS if h in needed]:
        scores[name] = os.path.join(runs, "scores", f"{name}.npy")
        if not os.path.exists(scores[name]):
            stage(prune, ["--data", data_dir, "--scorer", name, "--out", scores[name]] + dev +
                  (["--proxy", ref] if name in ("loss", "grad_norm") else []))
    return data_dir, scores


def subset_for(runs, data_dir, scores, scorer, strategy, keep, seed):
    """One run's subset .npy (None: all rows), made once, seeded; the oracle's: the rows whose ground truth is clean."""
    if scorer is None or strategy == "curriculum":
        return None
    path = os.path.join(runs, "subsets", "oracle.npy" if scorer == "oracle" else
                        f"{run_name(scorer, strategy, keep)}_s{seed}.npy")
    if not os.path.exists(path) and scorer == "oracle":
        data.atomic_save(np.flatnonzero(data.load_dataset(data_dir)["defect"].numpy() == 0), path)
    elif not os.path.exists(path):
        stage(prune, ["--scores", scores[scorer], "--strategy", strategy, "--keep", str(keep), "--seed", str(seed),
                      "--out", path, "--data", data_dir], quiet=True)
    return path


def resolve_oracle(grid, data_dir):
    """The oracle's keep set to the clean share of the rows, or the oracle left out (with a note) without labels."""
    clean = float((data.load_dataset(data_dir)["defect"] == 0).float().mean())
    if clean in (0.0, 1.0) and any(scorer == "oracle" for scorer, _, _ in grid):
        print(f"note: {data_dir} has no defect labels, so there is no oracle (the clean rows) to compare with")
    return [(s, st, round(clean, 3) if s == "oracle" else k) for s, st, k in grid if s != "oracle" or 0 < clean < 1]


def make_jobs(a, P, runs, data_dir, scores, grid, seeds, threads):
    """One job per (method, seed): the train_t2i.py flags that make it and where it goes."""
    return [dict(name=run_name(sc, st, k), method=method_name(sc, st), keep=k, seed=seed, data=data_dir, P=P,
                 subset=subset_for(runs, data_dir, scores, sc, st, k, seed), device=a.device, threads=threads,
                 out=os.path.join(runs, "train", f"{run_name(sc, st, k)}_s{seed}"), curve=(sc, st, k) in CURVES,
                 extra=["--curriculum", scores[sc]] if st == "curriculum" else [], guide=None)
            for sc, st, k in grid for seed in seeds]


# ----------------------------------------------------------------------------------------------------------------
# Each run (in a worker process): train_t2i.py, then evaluate.py on it and its snapshots; then the claims, decided on
# the runs' figures: a difference counts only where it exceeds the spread of the seeds

def train_and_evaluate(job):
    """Train one model, evaluate it and its FID-curve snapshots (everything printed goes to RUN/run.log); returns its
    row: metrics, seconds, the curve, and the clock (samples seen and seconds at each curve point)."""
    torch.set_num_threads(job["threads"])
    out, P, every = job["out"], job["P"], max(1, job["P"]["steps"] // job["P"]["curve_points"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "run.log"), "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        if not os.path.exists(os.path.join(out, "trained.json")):  # train_t2i.py --resume ends a killed run
            stage(train_t2i, ["--data", job["data"], "--out", out, "--steps", str(P["steps"]), "--batch-size",
                              str(P["batch_size"]), "--seed", str(job["seed"]), "--device", job["device"], "--resume",
                              "--grid-every", str(P["steps"]), "--snapshot-every", str(every if job["curve"] else 0)]
                  + P["target"] + (["--subset", job["subset"]] if job["subset"] else []) + job["extra"])
            with open(os.path.join(out, "log.csv")) as f:
                data.atomic_save({"train_seconds": float(list(csv.DictReader(f))[-1]["seconds"])},
                                 os.path.join(out, "trained.json"))
        ev = ["--data", job["data"], "--n-samples", str(P["n_samples"]), "--steps", str(P["sample_steps"]),
              "--encoder-steps", str(P["encoder_steps"]), "--cfg", str(P["cfg"]), "--device", job["device"]]

        def metrics(model, path, *flags):  # done when its metrics file is there, written after its picture
            if not (os.path.exists(path) and os.path.exists(os.path.splitext(path)[0] + "_samples.png")):
                stage(evaluate, ev + ["--model", model, "--out", path, *flags])
            return json.load(open(path))
        curve = {n: metrics(os.path.join(out, "snapshots", f"step{n}.pt"), os.path.join(out, "curve", f"step{n}.json"))
                 ["fid"] for n in (range(every, P["steps"], every) if job["curve"] else [])}
        m = metrics(os.path.join(out, "model.pt"), os.path.join(out, "metrics.json"))  # the run's marker, last
        if job["guide"]:  # bench/online_grid.py: the same model sampled with autoguidance alone (no CFG)
            m["fid_autoguided"] = metrics(os.path.join(out, "model.pt"), os.path.join(out, "metrics_autoguided.json"),
                                          "--guide", job["guide"], "--guidance", str(P["guidance"]), "--cfg", "1")["fid"]
    curve[P["steps"]] = m["fid"]
    with open(os.path.join(out, "log.csv")) as f:
        log = {int(r["step"]): r for r in csv.DictReader(f)}
    return dict(m, method=job["method"], keep=job["keep"], seed=job["seed"], steps=P["steps"],
                n_rows=len(np.load(job["subset"])) if job["subset"] else P["n_train"], curve=json.dumps(curve),
                train_seconds=round(json.load(open(os.path.join(out, "trained.json")))["train_seconds"], 1),
                eval_seconds=round(m.get("eval_seconds", 0.0), 1), score_seconds=float(log[max(log)].get(
                    "score_seconds") or 0.0), clock=json.dumps({n: [int(log[n]["samples"]), float(log[n]["seconds"])]
                                                               for n in curve if n in log}))


def collect(jobs, futures):
    """Every job's row, in the jobs' order: from its future ({future: job index}), or, with none, run here and now."""
    rows = {}
    results = (((futures[f], f.result) for f in cf.as_completed(futures)) if futures else
               ((i, lambda job=job: train_and_evaluate(job)) for i, job in enumerate(jobs)))
    for i, result in tqdm(results, total=len(jobs), desc="training runs"):
        try:
            rows[i] = result()
        except SystemExit as e:  # a stage refused its input: it wrote why to the run's log
            data.fail(f"{jobs[i]['out']}: a stage exited with code {e.code}; see {jobs[i]['out']}/run.log")
        tqdm.write(f"{jobs[i]['name']} seed {jobs[i]['seed']}: FID {rows[i]['fid']:.4f}, CLIP "
                   f"{rows[i]['clip_score']:.3f}, GenEval {rows[i]['geneval_overall']:.2f}")
    return [rows[i] for i in range(len(jobs))]


FIELDS = ["method", "keep", "seed", "fid", "kid_mean", "clip_score", "geneval_overall", "recovered", "recovered_geneval",
          "steps", "train_seconds", "eval_seconds", "n_rows", "noise_rate", "watermark_rate", "curve"]
SPREAD = {"fid": 0.026, "geneval_overall": 0.04}  # floor of a mean's std: bench/quick_spread.py's largest / sqrt(3)


def mean_std(rows, method, keep=None, key="fid"):
    """(mean, std, n) of `key` over the runs of one method (and keep), missing values left out."""
    v = [float(r[key]) for r in rows if r["method"] == method and str(r.get(key, "")) != ""
         and (keep is None or abs(float(r["keep"]) - keep) < 1e-9)]
    return (float(np.mean(v)), float(np.std(v)), len(v)) if v else (float("nan"), float("nan"), 0)


def fmt(rows, method, keep, key="fid", digits=3):
    m, s, n = mean_std(rows, method, keep, key)  # "mean ± std"
    return "–" if n == 0 else f"{m:.{digits}f} ± {s:.{digits}f}"


def add_recovered(rows):
    """Each run's share of the oracle's gain, paired by seed with the full set and the oracle: recovered =
    (FID_full - FID) / (FID_full - FID_oracle), recovered_geneval the same on GenEval (0 = the full set, 1 = the oracle)."""
    ref = {(r["method"], r["seed"]): r for r in rows if r["method"] in ("full", "oracle")}
    for r in rows:
        full, oracle = ref.get(("full", r["seed"])), ref.get(("oracle", r["seed"]))
        for key, col in [("fid", "recovered"), ("geneval_overall", "recovered_geneval")]:
            gap = float(full[key]) - float(oracle[key]) if full and oracle else 0.0
            r[col] = (float(full[key]) - float(r[key])) / gap if gap else ""
    return rows


def claim(rows, text, a, b, want=("better",)):
    """One claim, "run a = (method, keep) beats run b", decided on FID and on GenEval (mean over seeds): a difference
    counts only where it exceeds twice the larger seed std of the two (and SPREAD); with each run's recovered share."""
    verdicts, texts, pct = set(), [], lambda v: "–" if np.isnan(v) else f"{100 * v:.0f}%"
    for key, name, d in [("fid", "FID", 4), ("geneval_overall", "GenEval", 2)]:
        (ma, sa, na), (mb, sb, nb) = mean_std(rows, *a, key), mean_std(rows, *b, key)
        gain, spread = (mb - ma) if key == "fid" else (ma - mb), 2 * max(sa, sb, SPREAD[key])
        v = "not measured" if not (na and nb) else "better" if gain > spread else "worse" if gain < -spread else "tie"
        verdicts.add(v)
        texts.append(f"{name} not measured" if v == "not measured" else f"{name} {ma:.{d}f} vs {mb:.{d}f} ({v}: "
                     f"difference {abs(ma - mb):.{d}f}, spread {spread:.{d}f})")
    want = set(want)
    verdict = ("not measured" if "not measured" in verdicts else "holds" if verdicts <= want else
               "mixed (better on one metric, worse on the other)" if "worse" in verdicts and verdicts & want else
               "does not hold" if "worse" in verdicts else "holds on one metric only (a tie on the other)" if
               verdicts & want else "not decided (a tie within the spread)")
    shares = "; ".join(f"{m} {pct(mean_std(rows, m, k, 'recovered')[0])} / "
                       f"{pct(mean_std(rows, m, k, 'recovered_geneval')[0])}" for m, k in (a, b))
    return f"{text}: {'; '.join(texts)}: **{verdict}** (recovered, FID / GenEval: {shares})"


def claims(rows):
    """The paper's five claims, each decided on FID and on GenEval (mean over seeds, against the spread)."""
    A50, A20, R50, FULL = ("alchemist_shift_gsample", 0.5), ("alchemist_shift_gsample", 0.2), ("random", 0.5), ("full", 1.0)
    out = [claim(rows, "1. Alchemist 50% beats Full", A50, FULL),
           claim(rows, "2. Alchemist 20% matches Random 50%", A20, R50, want=("better", "tie")),
           claim(rows, "3a. Shift-Gsample beats Top-K (20%)", A20, ("alchemist_top_k", 0.2)),
           claim(rows, "3b. Shift-Gsample beats Gsample (20%)", A20, ("alchemist_gsample", 0.2)),
           claim(rows, "4. The Group MLP helps (Shift-Gsample 50%)", A50, ("alchemist_nogroup_shift_gsample", 0.5))]
    ca, cr = mean_curve(rows, *A50), mean_curve(rows, *R50)
    if not (ca and cr):
        return out + ["5. Alchemist reaches Random's final quality in fewer steps: not measured (no FID curves)"]
    target, by_step = cr[max(cr)], lambda c: ", ".join(f"{n}: {v:.4f}" for n, v in sorted(c.items()))
    reach = [n for n in sorted(ca) if ca[n] <= target + 2 * mean_std(rows, *R50)[1]]
    return out + [f"5. Alchemist 50% reaches Random 50%'s final FID ({target:.4f} at step {max(cr)}, within its seed "
                  f"spread) " + (f"at step {reach[0]}: {max(cr) / reach[0]:.1f}x fewer steps" if reach else
                                 "at no measured step") + f" (mean FID by step, Alchemist {by_step(ca)}; Random "
                  f"{by_step(cr)})"]


def mean_curve(rows, method, keep):
    """{step: mean FID over seeds} from the runs' FID-versus-step curves."""
    curves = [c for c in (json.loads(r.get("curve") or "{}") for r in rows if r["method"] == method and
                          abs(float(r["keep"]) - keep) < 1e-9) if len(c) > 1]
    steps = sorted(set.intersection(*[set(c) for c in curves]), key=int) if curves else []
    return {int(n): float(np.mean([c[n] for c in curves])) for n in steps}


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: results.md and the pictures, the command line, the lock, the worker processes

def results_md(rows, sel, P, preset, seconds):
    """The runs' conditions, every figure (mean ± std over seeds), the claims, and what each subset keeps."""
    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    lines = [f"# Ablation results, preset `{preset}`", "", f"Mean ± std over seeds {sorted({int(r['seed']) for r in rows})};"
             f" every model trained {P['steps']} steps of {P['batch_size']} ({P['size']}x{P['size']} images, "
             f"{P['n_train']} training rows); FID and KID on the evaluator's features, {P['n_samples']} samples "
             f"({P['sample_steps']} sampler steps, CFG {P['cfg']:g}). Lower FID/KID and higher CLIP score / GenEval "
             f"are better. Grid wall time {seconds / 60:.1f} min (all invocations) on {platform.node()} "
             f"({os.cpu_count()} CPUs, {gpu}), {time.strftime('%Y-%m-%d')}.", "",
             "## Every figure", "", "recovered: the share of the oracle's gain over the full set that a run "
             "recovers, (FID_full - FID) / (FID_full - FID_oracle), paired by seed; the same on GenEval.", "",
             "| method | keep | FID | KID | CLIP score | GenEval | recovered (FID) | recovered (GenEval) | noise in "
             "samples |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {int(round(k * 100))}% | " + " | ".join(fmt(rows, m, k, key, d) for key, d in [
        ("fid", 4), ("kid_mean", 4), ("clip_score", 3), ("geneval_overall", 2), ("recovered", 2),
        ("recovered_geneval", 2), ("noise_rate", 3)]) + " |" for m, k in dict.fromkeys(
        (r["method"], float(r["keep"])) for r in rows)]
    lines += ["", "## The paper's claims, here", ""] + claims(rows) + ([
        "", "## What each selection keeps (seed 0): the share of each defect type kept", "",
        "| method | keep | " + " | ".join(list(sel[0])[2:]) + " |", "|---|---|" + "---|" * (len(sel[0]) - 2)] if sel else [])
    lines += [f"| {r['method']} | {int(round(r['keep'] * 100))}% | " + " | ".join(f"{r[k]:.2f}" for k in list(r)[2:])
              + " |" for r in sel]
    return "\n".join(lines) + "\n"


def write_results(rows, out, data_dir, P, preset, jobs, seconds):
    write_csv(rows, os.path.join(out, "results.csv"), FIELDS)
    rows, firsts = [{k: str(v) for k, v in r.items()} for r in rows], [j for j in jobs if j["seed"] == jobs[0]["seed"]]
    train = data.load_dataset(data_dir)  # what each subset (of seed 0) keeps of each defect type
    sel = [{"method": j["method"], "keep": j["keep"], **{n: round(c / t, 3) for _, n, c, t in prune.keep_rates(
        np.load(j["subset"]), train["defect"].numpy(), train["defect_names"])}} for j in firsts if j["subset"]]
    write_csv(sel, os.path.join(out, "selection.csv"), ["method", "keep", *train["defect_names"]])  # sel may be empty
    md = results_md(rows, sel, P, preset, seconds)
    data.atomic_save(md, os.path.join(out, "results.md"))
    curves = {f"{m} {int(k * 100)}%": mean_curve(rows, m, k) for m, k in [("full", 1.0), ("random", 0.5),
                                                                         ("alchemist_shift_gsample", 0.5)]}
    evaluate.line_plot({k: v for k, v in curves.items() if v}, os.path.join(out, "fid_curves.png"), "FID vs step, "
                       "mean over seeds (lower is better)")
    shown = {"oracle": "oracle (clean rows)", "full": "full set", "random_50": "random 50%",  # samples.png's rows
             "alchemist_shift_gsample_50": "Alchemist 50%", "alchemist_top_k_20": "Alchemist Top-K 20%"}
    runs = {j["name"]: os.path.join(j["out"], "model.pt") for j in firsts if j["name"] in shown}
    if runs:  # not in a grid cut by --methods to none of them
        evaluate.compare_samples([runs[n] for n in shown if n in runs], [shown[n] for n in shown if n in runs],
                                 data.load_dataset(data_dir, "test"), os.path.join(out, "samples.png"),
                                 steps=P["sample_steps"], cfg=P["cfg"])
    print(md + f"\nwrote {out}/results.csv, results.md, selection.csv, fid_curves.png, samples.png ({seconds / 60:.1f} "
               "min; every run's own samples: RUNS/train/<run>/metrics_samples.png)")


def main(argv=None):
    a = parse_args(argv)
    P, runs, threads, workers = a.P, a.runs, torch.get_num_threads(), a.workers
    t0, early = time.time(), lambda g: g[0] in (None, "oracle", "random")  # the methods that need no proxy or rater
    with worker_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        torch.set_num_threads(1 if pool else threads)  # one thread beside the workers: the same bits on any machine
        try:
            data_dir, scores = prepare(a, P, runs, list(filter(early, P["grid"])))
            evaluate.load_encoder(data_dir, data.load_dataset(data_dir, "test"), data.pick_device(a.device),
                                  steps=P["encoder_steps"])  # trained once, here, before the workers need it
            grid, seeds = resolve_oracle(P["grid"], data_dir), list(range(a.seeds or P["seeds"]))
            jobs = make_jobs(a, P, runs, data_dir, scores, list(filter(early, grid)), seeds, torch.get_num_threads())
            futures = {pool.submit(train_and_evaluate, j): i for i, j in enumerate(jobs)} if pool else {}
            jobs += make_jobs(a, P, runs, data_dir, prepare(a, P, runs, grid)[1], [g for g in grid if not early(g)],
                              seeds, torch.get_num_threads())  # the proxy and raters, made while those runs train
            futures |= {pool.submit(train_and_evaluate, jobs[i]): i for i in range(len(futures), len(jobs))} if pool else {}
            print(f"{len(jobs)} training runs ({len(grid)} methods x {len(seeds)} seeds), {workers} at a time; "
                  f"each logs to its RUNS/train/<run>/run.log")
            rows = add_recovered(collect(jobs, futures))
        finally:
            torch.set_num_threads(threads)
    write_results(rows, a.out, data_dir, P, a.preset, jobs, wall_clock(runs, time.time() - t0))


def parse_args(argv):
    """The command line: the preset, its grid cut to --methods, the folders checked and locked before any work."""
    p = argparse.ArgumentParser(description="Run the ablation grid (data, proxy, raters, subsets, training, "
                                            "evaluation) and write the results table, claims and pictures.")
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="tiny: every stage once in about a "
                   "minute; quick: 16x16, the grid of the claims, under 20 min on 2 CPU cores; paper: one GPU")
    p.add_argument("--seeds", type=int, help="training seeds per method, each re-drawing its subset (default 1 or 3)")
    p.add_argument("--workers", type=int, help="runs at once (default: the preset's; on CUDA: gpu_workers on one GPU)")
    p.add_argument("--methods", help="only these runs of the grid, comma-separated, e.g. full,random_50 (default: all)")
    p.add_argument("--runs", help="working folder (default runs/ablate_<preset>); re-running resumes from it")
    p.add_argument("--out", help="results folder (default results/<preset>)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.error = data.arg_error
    a = p.parse_args(argv)
    if (a.seeds is not None and a.seeds < 1) or (a.workers is not None and a.workers < 1):
        data.fail("--seeds and --workers must be at least 1")
    names, wanted = [run_name(*g) for g in PRESETS[a.preset]["grid"]], (a.methods or "").split(",")
    if a.methods and [m for m in wanted if m not in names]:
        data.fail(f"--methods: {', '.join(m for m in wanted if m not in names)} not in the {a.preset} grid; choose "
                  f"from {', '.join(names)}")
    a.P = dict(PRESETS[a.preset], grid=[g for g in PRESETS[a.preset]["grid"] if not a.methods or run_name(*g) in wanted])
    a.runs, a.out = a.runs or os.path.join("runs", f"ablate_{a.preset}"), a.out or os.path.join("results", a.preset)
    try:
        data.check_out(a.runs, flag="--runs")
        data.check_out(a.out)
    except data.DataError as e:
        data.fail(str(e))
    cuda = data.pick_device(a.device).type == "cuda"  # --device cuda without one: refused before the lock
    a.workers = a.workers or (a.P.get("gpu_workers", 1) if cuda else a.P["workers"])
    lock_runs(a.runs)  # one grid per runs folder
    return a


_LOCKS = {}  # runs folder -> the lock file this process holds


def lock_runs(runs):
    """Hold RUNS/ablate.lock (the OS's flock) while this process lives: a second grid on the folder stops with one line
    naming the holder; the OS drops the lock when its holder dies, even by kill -9, so a stale file is taken over."""
    import fcntl  # POSIX: on Windows there is no lock
    path = os.path.realpath(os.path.join(runs, "ablate.lock"))
    if path not in _LOCKS:  # held already by this very process when ablate.main is called again (the tests do)
        os.makedirs(runs, exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            data.fail(f"{runs} is in use by another ablate.py (process {f.read().strip() or 'unknown'}); wait for it "
                      "to end or pass another --runs")
        except OSError as e:  # not held by another process: the folder cannot be locked at all
            data.fail(f"{path}: cannot lock the runs folder ({e.strerror}); pass another --runs")
        f.truncate(0)
        f.write(f"{os.getpid()} on {platform.node()}\n")
        f.flush()
        _LOCKS[path] = f


def worker_pool(workers):
    """Training processes: fresh interpreters (spawn), so that no state is shared by accident, that die with us."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=exit_with_parent, initargs=(os.getpid(),))


def exit_with_parent(parent):
    """A worker exits at once when its grid process is gone (even by kill -9), rather than train the queue alone."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def write_csv(rows, path, fields=None):
    """A list of dicts as a CSV file (the `fields` columns), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields or list(rows[0]), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    data.atomic_save(buf.getvalue(), path)


def wall_clock(runs, seconds):
    """Wall-clock seconds of the grid over all its invocations (a resumed grid adds the time of each part)."""
    path = os.path.join(runs, "wall_seconds.json")
    total = (json.load(open(path))["seconds"] if os.path.exists(path) else 0.0) + seconds
    data.atomic_save({"seconds": total}, path)
    return total


if __name__ == "__main__":
    main()
