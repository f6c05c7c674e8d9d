"""bench/curated_val.py -- what an uncurated validation set costs the rater on a real-image-like import, and whether
the direction check (rater.py) catches it.

Run: python bench/curated_val.py --out runs/curated [--n 1800 --n-curated 300 --size 16 --preset quick] [--run]
Without --run it only writes the two imports and prints the commands; with --run it also trains and rates both:
  ROOT/photos     N generated shapes exported as PNG files with a captions.jsonl, 30% of the captions wrong (another
                  image's) and 10% of the images swamped by noise, NOTHING marked: what a new user brings
  ROOT/curated    a small clean folder of its own (another seed), with its own captions.jsonl
  ROOT/with_val   data.py --from-folder ROOT/photos --val-from ROOT/curated     val and test from the curated folder
  ROOT/same_rows  data.py --from-folder ROOT/photos                             val and test drawn from the same rows
The import marks nothing, so after it this script writes the ground truth back into train.pt and val.pt (by each
row's image and caption) for the AUROCs and to report how dirty val is; no stage reads it. Then for each import:
proxy.py (--proxy-steps), metagrad.py (--warmup, --meta-steps) and rater.py, and one table: val's dirty share, the
AUROCs on train rows, and the direction check (val rows against corrupted copies of themselves; no labels needed).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import metagrad  # noqa: E402
import proxy  # noqa: E402
import rater  # noqa: E402

MIX = {"misaligned": 0.3, "noise": 0.1}  # the user: 30% wrong captions and 10% noise images


def export(folder, n, size, seed, mix):
    """n generated rows as PNGs and captions.jsonl (no "defect" field); returns {(image bytes, caption): defect}."""
    images, captions, defect, _ = data.generate(n, size, np.random.default_rng(seed), mix)
    os.makedirs(folder, exist_ok=True)
    truth, lines = {}, []
    for i in range(n):
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(os.path.join(folder, f"{i:05d}.png"))
        lines.append(json.dumps({"image": f"{i:05d}.png", "caption": captions[i]}))
        truth[(images[i].numpy().tobytes(), captions[i])] = int(defect[i])
    index = os.path.join(folder, "captions.jsonl")
    with open(index + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(index + ".tmp", index)
    return truth


def relabel(folder, truth):
    """Write the known defects into FOLDER's train.pt and val.pt; returns val's share of defective rows."""
    shares = {}
    for split in ["train", "val"]:
        d = data.load_dataset(folder, split)
        d["defect"] = torch.tensor([truth.get((im.numpy().tobytes(), c), 0) for im, c in zip(d["images"], d["captions"])])
        d["defect_names"] = data.DEFECT_NAMES
        data.atomic_save(d, os.path.join(folder, f"{split}.pt"))
        shares[split] = float((d["defect"] != 0).float().mean())
    return shares["val"]


def run_case(folder, run, a):
    """proxy.py, metagrad.py, rater.py on one import; returns rater.py's report."""
    proxy.main(["--data", folder, "--out", run, "--preset", a.preset, "--steps", str(a.proxy_steps)])
    metagrad.main(["--data", folder, "--proxy", os.path.join(run, "proxy.pt"), "--out", run, "--primary-warmup",
                   str(a.warmup), "--steps", str(a.meta_steps), "--rater-input", a.rater_input])
    rater.main(["--data", folder, "--rater", os.path.join(run, "rater.pt"), "--out", os.path.join(run, "scores.npy")])
    with open(os.path.join(run, "scores_report.json")) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="root folder for the exports, the imports and the runs")
    p.add_argument("--n", type=int, default=1800, help="rows in the dirty import")
    p.add_argument("--n-curated", type=int, default=300, help="rows in the curated folder (half val, half test)")
    p.add_argument("--size", type=int, default=16, choices=data.SIZES, help="image side")
    p.add_argument("--run", action="store_true", help="also train and rate both imports (about 10 minutes on one CPU core with the quick preset)")
    p.add_argument("--preset", default="quick", choices=list(proxy.PRESETS), help="proxy.py --preset")
    p.add_argument("--proxy-steps", type=int, default=1000, help="proxy.py --steps (the reference)")
    p.add_argument("--warmup", type=int, default=400, help="metagrad.py --primary-warmup")
    p.add_argument("--meta-steps", type=int, default=300, help="metagrad.py --steps")
    p.add_argument("--rater-input", choices=rater.INPUTS, default="losses", help="metagrad.py --rater-input")
    a = p.parse_args(argv)
    photos, curated = os.path.join(a.out, "photos"), os.path.join(a.out, "curated")
    truth = export(photos, a.n, a.size, 0, MIX)
    export(curated, a.n_curated, a.size, 1, {})
    imports = {"with_val": ["--val-from", curated], "same_rows": []}
    dirty = {}
    for name, extra in imports.items():
        folder = os.path.join(a.out, name)
        data.main(["--out", folder, "--from-folder", photos, "--size", str(a.size), "--n-val", str(a.n_curated),
                   "--n-test", str(a.n_curated), *extra])
        dirty[name] = relabel(folder, truth)
        print(f"{name}: val is {100 * dirty[name]:.0f}% defective")
    if not a.run:
        print("next, for each import D in", ", ".join(imports), f": proxy.py --data {a.out}/D --out {a.out}/D/run "
              f"--steps {a.proxy_steps}; metagrad.py ... --primary-warmup {a.warmup} --steps {a.meta_steps}; rater.py")
        return
    rows = ["| val | val defective | misaligned AUROC | noise AUROC | canary misaligned | canary noise | "
            "val rows' mean percentile | warned |", "|---|---|---|---|---|---|---|---|"]
    for name in imports:
        r = run_case(os.path.join(a.out, name), os.path.join(a.out, name, "run"), a)
        warned = rater.canary_warning(r) is not None
        rows.append(f"| {name} | {100 * dirty[name]:.0f}% | {r['auroc_misaligned']:.3f} | {r['auroc_noise']:.3f} | "
                    f"{r['canary_misaligned']:.3f} | {r['canary_noise']:.3f} | {r['val_percentile']:.0f} | "
                    f"{'yes' if warned else 'no'} |")
    table = "\n".join(rows)
    print(table)
    data.atomic_save(table + "\n", os.path.join(a.out, "curated_val.md"))


if __name__ == "__main__":
    main()
