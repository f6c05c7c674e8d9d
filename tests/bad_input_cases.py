"""tests/bad_input_cases.py -- the cases of the bad-input battery, one table per script; tests/bad_inputs.py runs them.

A row: NAME | ARGV (shell words; {KEY} is a path of the fixtures tests/bad_inputs.py builds) | WORDS the one line of
a refusal must hold (separated by ;). A row's ARGV comes after the script's base flags and its --out, so it overrides
them. A name ending in "(accept)" is a documented acceptance: the script must run and exit 0.
"""
import json
import os
import shutil

import torch

import data


def row(image, caption="a red circle", **kw):
    """One line of a captions.jsonl."""
    return json.dumps({"image": image, "caption": caption, **kw})


FOLDERS = {  # captions.jsonl line 4 of each folder import case (the other lines are good)
    "image_int": row(5), "image_null": row(None), "image_empty": row(""), "image_list": row(["0.png"]),
    "parent": row("../outside.png"), "absolute": None, "nested_parent": row("x/../../outside.png"),
    "missing": row("gone.png"), "not_image": row("captions.jsonl"), "a_folder": row("."), "nul": row("0.png\u0000"),
    "caption_int": row("0.png", 5), "caption_null": row("0.png", None), "defect_neg": row("0.png", defect=-1),
    "defect_str": row("0.png", defect="x"), "defect_float": row("0.png", defect=1.5),
    "defect_bool": row("0.png", defect=True), "defect_huge": row("0.png", defect=10 ** 12),
    "malformed": '{"image": "0.png", "caption"', "no_caption": json.dumps({"image": "0.png"}), "json_list": "[1, 2]",
    "utf8": b'{"image": "0.png", "caption": "caf\xe9"}'}


def hold_lock(runs):
    """This process holds RUNS's lock, as a running grid would."""
    import ablate
    if not os.path.exists(os.path.join(runs, "ablate.lock")):
        ablate.lock_runs(runs)


def data_cases(b):
    F, o = b.F, ["--out", os.path.join(b.F["OUT"], "data")]
    b.rows("data", o + ["--size", "16", "--n-train", "20", "--n-val", "2", "--n-test", "2"], """
        size 20 | --size 20 | --size
        unknown defects | --defects x | --defects
        n-train 0 | --n-train 0 | --n-train
        n-val -1 | --n-val -1 | --n-val
        n-test 0 | --n-test 0 | --n-test
        seed not a number | --seed x | --seed
        max-objects 3 | --max-objects 3 | --max-objects
        unknown flag | --bogus | --bogus
        size nan | --size nan | --size
        folder: two images | --from-folder {dir_two} | {dir_two}
        folder: no rows | --from-folder {dir_empty} | {dir_empty}
        folder: no captions.jsonl | --from-folder {dir_no_index} | {dir_no_index}
        folder: no clean rows for val and test | --from-folder {dir_all_defective} | clean
        folder: missing | --from-folder {OUT}/nowhere | nowhere
        val-from without --from-folder | --val-from {dir_ok} | --val-from""")
    b.add("data", "no --out", [], says=["--out"])
    b.outputs("data", ["--size", "16", "--n-train", "20", "--n-val", "2", "--n-test", "2"])
    b.rows("data", o + ["--size", "16"], "\n".join(f"folder: {k} | --from-folder {{dir_{k}}} | captions.jsonl:4"
                                                   for k in FOLDERS))

    def real_words():  # every row has a real first token: "<pad>" as a caption is a word, read as <unk>
        d = [data.load_dataset(os.path.join(F["OUT"], "data-specials"), s) for s in ["train", "val", "test"]]
        bad = [c for x in d for c, t in zip(x["captions"], x["tokens"]) if not (t[0] > 0 and t[0] != 2)]
        return f"captions {bad} became padding or the null caption" if bad else None
    b.rows("data", ["--size", "16", "--n-val", "1", "--n-test", "1"], """
        folder: captions <pad>, <null> and empty (accept) | --from-folder {dir_specials} --out {OUT}/data-specials |""",
           after=real_words)
    b.rows("data", ["--size", "16"], """
        n-val 8 (accept) | --n-train 20 --n-val 8 --n-test 2 --out {OUT}/data-val8 |""", after=b.no_mark)


def proxy_cases(b):
    F = b.F
    base = ["--data", F["D"], "--preset", "quick", "--steps", "2", "--batch-size", "8", "--draws", "1", "--device",
            "cpu", "--out", os.path.join(F["OUT"], "proxy")]
    b.rows("proxy", base, """
        steps 0 | --steps 0 | --steps
        steps -1 | --steps -1 | --steps
        batch-size 0 | --batch-size 0 | --batch-size
        lr 0 | --lr 0 | --lr
        lr -1 | --lr -1 | --lr
        lr nan | --lr nan | --lr
        lr inf | --lr inf | --lr
        lr text | --lr fast | --lr
        draws 0 | --draws 0 | --draws
        ckpt-every 0 | --ckpt-every 0 | --ckpt-every
        preset bogus | --preset huge | --preset
        device tpu | --device tpu | --device
        missing data | --data {OUT}/nowhere | nowhere
        data is a garbage file | --data {GARBAGE} | {GARBAGE}
        corrupt val.pt | --data {BADVAL} | val.pt
        32px train beside 16px val | --data {MIXED} | val.pt; image size""")
    if not torch.cuda.is_available():
        b.rows("proxy", base, "device cuda without CUDA | --device cuda | cuda")
    b.add("proxy", "no --data", base[2:], says=["--data"])
    b.outputs("proxy", base)
    r = os.path.join(F["OUT"], "proxy-resume")
    b.rows("proxy", base + ["--steps", "4", "--resume", "--out", r], """
        resume: another seed | --seed 1 | seed
        resume: another batch size | --batch-size 4 | batch_size
        resume: other data of the same size | --data {D2} | data
        resume with a lower --lr (accept) | --lr 1e-4 |""", before=b.copy_of(F["P"], r))
    b.rows("proxy", base + ["--resume"], "resume: corrupt proxy.pt | --out {OUT}/proxy-garbage | proxy.pt",
           before=lambda: (os.makedirs(os.path.join(F["OUT"], "proxy-garbage"), exist_ok=True),
                           shutil.copy(F["GARBAGE"], os.path.join(F["OUT"], "proxy-garbage", "proxy.pt"))))
    b.rows("proxy", base, "val split of 8 rows (accept) | --data {V8} --out {OUT}/proxy-val8 |")


def metagrad_cases(b):
    F = b.F
    base = ["--data", F["D"], "--proxy", F["PP"], "--steps", "2", "--batch-size", "8", "--primary-warmup", "2",
            "--draws", "1", "--device", "cpu", "--out", os.path.join(F["OUT"], "meta")]
    b.rows("metagrad", base, """
        steps 0 | --steps 0 | --steps
        batch-size 0 | --batch-size 0 | --batch-size
        lr nan | --lr nan | --lr
        lr 0 | --lr 0 | --lr
        rater-lr 0 | --rater-lr 0 | --rater-lr
        rater-lr inf | --rater-lr inf | --rater-lr
        eta 0 | --method exact --eta 0 | --eta
        eta nan | --method exact --eta nan | --eta
        gamma 2 | --gamma 2 | --gamma
        gamma nan | --gamma nan | --gamma
        temperature 0 | --temperature 0 | --temperature
        temperature -inf | --temperature=-inf | --temperature
        logit-decay -1 | --logit-decay -1 | --logit-decay
        logit-decay nan | --logit-decay nan | --logit-decay
        draws 0 | --draws 0 | --draws
        log-every 0 | --log-every 0 | --log-every
        ckpt-every 0 | --ckpt-every 0 | --ckpt-every
        primary-warmup -1 | --primary-warmup -1 | --primary-warmup
        simplified with exact | --simplified --method exact | --simplified
        method bogus | --method best | --method
        schedule bogus | --schedule x | --schedule
        proxy missing | --proxy {OUT}/nowhere.pt | nowhere.pt
        proxy garbage | --proxy {GARBAGE} | {GARBAGE}
        proxy empty file | --proxy {EMPTY} | {EMPTY}
        proxy a list | --proxy {LIST} | {LIST}
        proxy holds code | --proxy {EVIL} | {EVIL}
        proxy a dataset | --proxy {D}/train.pt | train.pt
        proxy 32px | --proxy {P32} | {P32}
        proxy other vocabulary | --proxy {PVOCAB} | {PVOCAB}
        proxy shorter captions | --proxy {PSHORT} | {PSHORT}
        primary missing | --primary {OUT}/nowhere.pt | nowhere.pt
        primary garbage | --primary {GARBAGE} | {GARBAGE}
        primary of another size | --primary {P32} | {P32}
        primary warmed on train, not val | --primary {PP} | {PP}
        corrupt val.pt | --data {BADVAL} | val.pt
        32px train beside 16px val | --data {MIXED} | val.pt
        missing data | --data {OUT}/nowhere | nowhere""", after=b.no_mark)
    b.outputs("metagrad", base)
    r = os.path.join(F["OUT"], "meta-resume")
    b.rows("metagrad", base + ["--steps", "4", "--resume", "--out", r], """
        resume: other data | --data {D2} | data (train.pt
        resume: another seed | --seed 3 | seed
        resume: no group head | --no-group | no_group
        resume: another method | --method exact | method
        resume: 32px data and proxy | --data {D32} --proxy {P32} | data (train.pt""", before=b.copy_of(F["M"], r))


def rater_cases(b):
    F = b.F
    base = ["--data", F["D"], "--rater", F["RATER"], "--device", "cpu", "--out", os.path.join(F["OUT"], "rater.npy")]
    b.rows("rater", base, """
        shuffles 0 | --shuffles 0 | --shuffles
        batch-size 0 | --batch-size 0 | --batch-size
        seed text | --seed one | --seed
        out not .npy | --out {OUT}/rater.txt | .npy
        out a folder named .npy | --out {OUT}/rater/dir.npy | dir.npy
        rater missing | --rater {OUT}/nowhere.pt | nowhere.pt
        rater garbage | --rater {GARBAGE} | {GARBAGE}
        rater a proxy | --rater {PP} | {PP}
        rater holds code | --rater {EVIL} | {EVIL}
        rater a metagrad state | --rater {M}/metagrad_state.pt | metagrad_state.pt
        rater for 16px, data 32px | --data {D32} | 32px
        data missing | --data {OUT}/nowhere | nowhere""", after=b.no_mark)
    b.outputs("rater", base, ".npy")


def prune_cases(b):
    F = b.F
    base = ["--scores", F["S"], "--strategy", "shift_gsample", "--keep", "0.5", "--out",
            os.path.join(F["OUT"], "prune.npy")]
    b.rows("prune", base, """
        keep 0 | --keep 0 | --keep
        keep 1.5 | --keep 1.5 | --keep
        keep nan | --keep nan | --keep
        count 0 | --count 0 | --count
        keep and count | --count 5 | --count
        sigma 0 | --sigma 0 | --sigma
        sigma nan | --sigma nan | --sigma
        mu inf | --mu inf | --mu
        beta 1 | --strategy ccs --beta 1 | --beta
        strata 0 | --strategy ccs --strata 0 | --strata
        discard-top 100 | --discard-top 100 | --discard-top
        start 101 | --strategy block --start 101 | --start
        start nan | --strategy block --start nan | --start
        strategy bogus | --strategy best | --strategy
        data of another length | --data {D32} | rows
        scores NaN | --scores {NAN_SCORES} | {NAN_SCORES}
        scores 2-D | --scores {TWO_D} | {TWO_D}
        scores empty | --scores {EMPTY_NPY} | {EMPTY_NPY}
        scores strings | --scores {STR_SCORES} | {STR_SCORES}
        scores garbage | --scores {GARBAGE} | {GARBAGE}
        scores pickled | --scores {OBJ_NPY} | {OBJ_NPY}
        scores missing | --scores {OUT}/nowhere.npy | nowhere.npy
        scores shorter than the data | --scores {SHORT_SCORES} --data {D} | rows
        out not .npy | --out {OUT}/prune.txt | .npy""")
    b.rows("prune", base[:4] + base[6:], """
        neither keep nor count | | --keep
        count too many | --count 100000 | --count
        keep 1 (accept) | --strategy top_k --keep 1 --out {OUT}/prune-all.npy |""")
    b.add("prune", "no strategy", base[:2] + base[4:], says=["--strategy"])
    b.outputs("prune", base, ".npy")
    b.rows("prune", ["--out", os.path.join(F["OUT"], "prune-score.npy"), "--data", F["D"]], """
        score bogus | --scorer beauty | --scorer
        score loss without proxy | --scorer loss | --proxy
        score loss, proxy 32px | --scorer loss --proxy {P32} | 32px
        score loss, proxy of another vocabulary | --scorer loss --proxy {PVOCAB} | vocabulary
        score loss, proxy garbage | --scorer loss --proxy {GARBAGE} | {GARBAGE}
        score loss, draws 0 | --scorer loss --proxy {PP} --draws 0 | --draws
        score, corrupt data | --scorer clarity --data {GARBAGE} | {GARBAGE}
        score clarity, --out under a file | --scorer clarity --out {UNDER}.npy | {FILE}""")
    b.add("prune", "score without data", ["--scorer", "clarity", "--out", os.path.join(F["OUT"], "p.npy")],
          says=["--data"])


def train_t2i_cases(b):
    F = b.F
    base = ["--data", F["D"], "--steps", "2", "--width", "16", "--depth", "1", "--batch-size", "8", "--grid-every",
            "0", "--device", "cpu", "--out", os.path.join(F["OUT"], "t2i")]
    b.rows("train_t2i", base, """
        steps 0 | --steps 0 | --steps
        batch-size 0 | --batch-size 0 | --batch-size
        lr 0 | --lr 0 | --lr
        lr nan | --lr nan | --lr
        lr -inf | --lr=-inf | --lr
        width 0 | --width 0 | --width
        width 30 | --width 30 | --width
        depth 0 | --depth 0 | --depth
        ema 1 | --ema 1 | --ema
        ema nan | --ema nan | --ema
        ckpt-every 0 | --ckpt-every 0 | --ckpt-every
        snapshot-every -1 | --snapshot-every -1 | --snapshot-every
        grid-every -1 | --grid-every -1 | --grid-every
        guide-at 2 | --guide-at 2 | --guide-at
        guide-at nan | --guide-at nan | --guide-at
        super-batch-factor 0.5 | --super-batch-factor 0.5 | --super-batch-factor
        super-batch-factor inf | --super-batch-factor inf | --super-batch-factor
        chunks 0 | --chunks 0 | --chunks
        temperature -1 | --temperature -1 | --temperature
        temperature nan | --temperature nan | --temperature
        online bogus | --online best | --online
        online jest without a reference | --online jest | --reference
        reference with online none | --reference {PP} | --reference
        reference garbage | --online jest --reference {GARBAGE} | {GARBAGE}
        reference holds code | --online jest --reference {EVIL} | {EVIL}
        reference 32px | --online jest --reference {P32} | {P32}
        reference of another vocabulary | --online jest --reference {PVOCAB} | vocabulary
        subset empty | --subset {EMPTY_NPY} | {EMPTY_NPY}
        subset 2-D | --subset {TWO_D} | {TWO_D}
        subset floats | --subset {FLOAT_ROWS} | {FLOAT_ROWS}
        subset duplicates | --subset {DUP} | {DUP}
        subset out of range | --subset {RANGE} | {RANGE}
        subset not npy | --subset {GARBAGE} | {GARBAGE}
        subset pickled objects | --subset {OBJ_NPY} | {OBJ_NPY}
        subset missing | --subset {OUT}/nowhere.npy | nowhere.npy
        preset bogus | --preset huge | --preset
        corrupt val.pt | --data {BADVAL} | val.pt
        32px train beside 16px val | --data {MIXED} | val.pt
        missing data | --data {OUT}/nowhere | nowhere
        data with captions <pad> and <null> (accept) | --data {SPECIALS} --batch-size 16 --out {OUT}/t2i-specials |
        val split of 8 rows (accept) | --data {V8} --out {OUT}/t2i-val8 |""", after=b.no_mark)
    b.rows("train_t2i", base, "lr 1e30: a non-finite loss | --lr 1e30 --steps 20 | non-finite; no checkpoint written")
    b.cases[-1].out = None  # a run that fails after it started: its folder is its own
    b.outputs("train_t2i", base)
    r = os.path.join(F["OUT"], "t2i-resume")
    b.rows("train_t2i", base + ["--steps", "4", "--resume", "--out", r], """
        resume: another subset | --subset {SUB} | data
        resume: other data | --data {D2} | data
        resume: another seed | --seed 2 | seed
        resume: another EMA | --ema 0.5 | ema_decay
        resume: another batch size | --batch-size 4 | batch_size
        resume: online selection added | --online hard_learner | select
        resume: another width | --width 32 | model size""", before=b.copy_of(F["T"], r))


def evaluate_cases(b):
    F = b.F
    base = ["--data", F["D"], "--model", F["MODEL"], "--n-samples", "4", "--steps", "2", "--encoder-steps", "5",
            "--batch-size", "4", "--device", "cpu", "--out", os.path.join(F["OUT"], "eval", "metrics.json")]
    b.rows("evaluate", base, """
        cfg nan | --cfg nan | --cfg
        cfg inf | --cfg inf | --cfg
        guidance nan | --guide {MODEL} --guidance nan | --guidance
        guidance without guide | --guidance 2 | --guide
        guide 32px | --guide {P32} | {P32}
        guide garbage | --guide {GARBAGE} | {GARBAGE}
        guide of another vocabulary | --guide {PVOCAB} | {PVOCAB}
        n-samples 1 | --n-samples 1 | --n-samples
        n-samples over the test prompts | --n-samples 41 | --repeat
        batch-size 0 | --batch-size 0 | --batch-size
        steps 0 | --steps 0 | --steps
        encoder-steps 0 | --encoder-steps 0 | --encoder-steps
        device bogus | --device gpu0 | --device
        inception missing | --inception {OUT}/nowhere.pt | nowhere.pt
        inception garbage | --inception {GARBAGE} | {GARBAGE}
        inception a list | --inception {LIST} | {LIST}
        model missing | --model {OUT}/nowhere.pt | nowhere.pt
        model garbage | --model {GARBAGE} | {GARBAGE}
        model holds code | --model {EVIL} | {EVIL}
        model a dataset | --model {D}/test.pt | test.pt
        model 32px | --model {P32} | {P32}
        model of another vocabulary | --model {PVOCAB} | {PVOCAB}
        model of shorter captions | --model {PSHORT} | {PSHORT}
        data missing | --data {OUT}/nowhere | nowhere
        data without test.pt | --data {dir_ok} | test.pt
        out a folder | --out {OUT}/eval/adir | adir
        out whose picture would be a folder | --out {OUT}/eval/grid.json | grid_samples.png
        a model evaluated (accept) | --out {OUT}/eval-ok/m.json |""", after=b.no_mark)
    b.outputs("evaluate", base, ".json")


def toy2d_cases(b):
    base = ["--preset", "tiny", "--seeds", "1", "--device", "cpu", "--out", os.path.join(b.F["OUT"], "toy")]
    b.rows("toy2d", base, """
        lr 0 | --lr 0 | --lr
        lr nan | --lr nan | --lr
        factor 0.5 | --factor 0.5 | --factor
        factor nan | --factor nan | --factor
        temperature 0 | --temperature 0 | --temperature
        guidance 0 | --guidance 0 | --guidance
        guidance inf | --guidance inf | --guidance
        bad-frac 1 | --bad-frac 1 | --bad-frac
        bad-frac nan | --bad-frac nan | --bad-frac
        chunks 0 | --chunks 0 | --chunks
        chunks over the batch | --chunks 1000 | --chunks
        steps 0 | --steps 0 | steps
        batch-size 0 | --batch-size 0 | sizes
        n-eval 1 | --n-eval 1 | --n-eval
        seeds 0 | --seeds 0 | --seeds
        online bogus | --online best | --online
        online twice | --online jest,jest | --online
        online empty | --online , | --online
        preset bogus | --preset huge | --preset
        tiny preset (accept) | --online none --out {OUT}/toy-ok |""")
    b.outputs("toy2d", base)


def ablate_cases(b):
    """Refusals only (an accepted grid is tests/test_ablate.py's): each one must stop before any work."""
    runs = os.path.join(b.F["OUT"], "ablate-runs")
    base = ["--runs", runs, "--out", os.path.join(b.F["OUT"], "ablate-results"), "--device", "cpu"]
    b.rows("ablate", base, """
        seeds 0 | --seeds 0 | --seeds
        workers 0 | --workers 0 | --workers
        preset bogus | --preset huge | --preset
        unknown flag | --fast | --fast
        runs under a file | --runs {UNDER} | --runs
        out under a file | --out {UNDER} | --out
        runs unwritable | --runs {UNWRITABLE} | --runs""", out_flag="--runs")
    if not torch.cuda.is_available():
        b.rows("ablate", base, "device cuda without CUDA | --device cuda | cuda", out_flag="--runs")
    locked = os.path.join(b.F["OUT"], "ablate-locked")
    b.rows("ablate", base, f"runs folder locked by a running grid | --runs {{OUT}}/ablate-locked | in use; "
           f"{os.getpid()}", out_flag="--runs", before=lambda: hold_lock(locked))


TABLES = [data_cases, proxy_cases, metagrad_cases, rater_cases, prune_cases, train_t2i_cases, evaluate_cases,
          toy2d_cases, ablate_cases]
