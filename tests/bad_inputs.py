"""tests/bad_inputs.py -- the bad-input battery (issue 13): every script given inputs a careful user might get wrong.

Run:     OMP_NUM_THREADS=1 python tests/bad_inputs.py [--only TEXT] [--skip TEXT] [--fresh] [--list]
A case is handled when its process
  refuses it: exit code 2, exactly one line on stderr (no "Traceback"), and nothing written to its output path; or
  accepts it (a documented acceptance, marked "accept" below): exit code 0, no traceback.
Each case runs as its own process: forked from this one after the scripts are imported (fast), or, with --fresh,
`python SCRIPT.py ...` in a fresh interpreter (slow, about 4 s a case). Progress bars are not messages: they are
switched off (TQDM_DISABLE=1), and one a script draws anyway is not counted as a line. Prints every case and the
count handled; exits 1 if any case is not handled.
tests/test_inputs.py runs a representative subset of these cases in the test suite.
"""
import argparse
import json
import os
import pickle
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ["TQDM_DISABLE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SCRIPTS = ["data", "proxy", "metagrad", "rater", "prune", "train_t2i", "evaluate", "toy2d", "ablate"]
for _name in SCRIPTS:  # imported once here: every forked case starts from them
    __import__(_name)
import data  # noqa: E402
import proxy  # noqa: E402


class Case:
    def __init__(self, name, script, argv, out, accept=False, says=(), before=None, after=None):
        self.name, self.script, self.argv, self.out, self.accept = name, script, [str(x) for x in argv], out, accept
        self.says, self.before, self.after = says, before, after  # words the message must hold; set-up; extra check


class Evil:
    """Unpickling this runs code: it would create the file `mark`."""

    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (open, (self.mark, "w"))


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: tiny data sets, models and files, good and bad

def quiet(main, argv):
    with open(os.devnull, "w") as null:
        old, sys.stdout = sys.stdout, null
        try:
            main(argv)
        finally:
            sys.stdout = old


def write_folder(folder, lines, n_images=6):
    os.makedirs(folder, exist_ok=True)
    for i in range(n_images):
        Image.new("RGB", (20, 20), (40 * i, 20, 30)).save(os.path.join(folder, f"{i}.png"))
    with open(os.path.join(folder, "captions.jsonl"), "wb") as f:
        f.write(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return folder


def row(image, caption="a red circle", **kw):
    return json.dumps({"image": image, "caption": caption, **kw})


def cifar(root, meta=None, batch=None, raw_meta=None):
    base = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(base, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(os.path.join(base, "batches.meta"), "wb") as f:
        f.write(raw_meta if raw_meta is not None else
                pickle.dumps(meta or {b"label_names": [b"cat", b"dog"], b"num_vis": 3072}, protocol=2))
    with open(os.path.join(base, "data_batch_1"), "wb") as f:
        pickle.dump(batch or {b"labels": [int(x) for x in rng.integers(0, 2, 40)],
                              b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8)}, f, protocol=2)
    return root


def random_model(path, vocab, size=16, length=20):
    torch.manual_seed(0)
    proxy.save_checkpoint(path, proxy.DiT(image_size=size, patch=max(2, size // 8), width=16, depth=1, heads=2,
                                          text_depth=1, vocab_size=len(vocab), max_tokens=length), 0, vocab)
    return path


def build(root):
    """Every input the cases read, made once (about half a minute on one core)."""
    j = lambda *p: os.path.join(root, *p)
    F = {"root": root}
    F["D"], F["D2"], F["D32"], F["V8"] = j("d16"), j("d16b"), j("d32"), j("val8")
    quiet(data.main, ["--out", F["D"], "--size", "16", "--n-train", "200", "--n-val", "40", "--n-test", "40"])
    quiet(data.main, ["--out", F["D2"], "--size", "16", "--n-train", "200", "--n-val", "40", "--n-test", "40",
                      "--seed", "1"])
    quiet(data.main, ["--out", F["D32"], "--size", "32", "--n-train", "30", "--n-val", "6", "--n-test", "6"])
    quiet(data.main, ["--out", F["V8"], "--size", "16", "--n-train", "60", "--n-val", "8", "--n-test", "20"])
    F["BADVAL"], F["MIXED"] = j("badval"), j("mixed")
    shutil.copytree(F["D"], F["BADVAL"])
    with open(j("badval", "val.pt"), "wb") as f:
        f.write(b"\x80\x02 truncated")
    os.makedirs(F["MIXED"])
    for split, src in [("train", F["D32"]), ("val", F["D"]), ("test", F["D"])]:
        shutil.copy(os.path.join(src, f"{split}.pt"), j("mixed", f"{split}.pt"))
    vocab = data.load_dataset(F["D"])["vocab"]
    F["P"], F["M"], F["T"] = j("proxy"), j("rate"), j("target")
    quiet(proxy.main, ["--data", F["D"], "--out", F["P"], "--preset", "quick", "--steps", "2", "--batch-size", "8",
                       "--draws", "1", "--report", "val", "--device", "cpu"])
    import metagrad
    import prune
    import rater
    import train_t2i
    quiet(metagrad.main, ["--data", F["D"], "--proxy", j("proxy", "proxy.pt"), "--out", F["M"], "--steps", "2",
                          "--batch-size", "8", "--primary-warmup", "2", "--draws", "1", "--device", "cpu"])
    F["S"], F["SUB"] = j("scores.npy"), j("subset.npy")
    quiet(rater.main, ["--data", F["D"], "--rater", j("rate", "rater.pt"), "--out", F["S"], "--device", "cpu"])
    quiet(prune.main, ["--scores", F["S"], "--strategy", "top_k", "--keep", "0.5", "--out", F["SUB"]])
    quiet(train_t2i.main, ["--data", F["D"], "--out", F["T"], "--steps", "2", "--width", "16", "--depth", "1",
                           "--batch-size", "8", "--grid-every", "0", "--device", "cpu"])
    F["P32"] = random_model(j("p32.pt"), vocab, size=32)
    F["PVOCAB"] = random_model(j("pvocab.pt"), vocab[:3] + vocab[3:][::-1])  # same size, other words
    F["PSHORT"] = random_model(j("pshort.pt"), vocab, length=5)  # captions cut to 5 tokens
    F["FILE"] = j("a_file.txt")
    open(F["FILE"], "w").write("not a folder\n")
    F["GARBAGE"], F["EMPTY"], F["LIST"], F["EVIL"], F["MARK"] = (j("garbage.pt"), j("empty.pt"), j("list.pt"),
                                                                 j("evil.pt"), j("EVIL_RAN"))
    open(F["GARBAGE"], "wb").write(b"this is not a torch file")
    open(F["EMPTY"], "wb").close()
    torch.save([1, 2, 3], F["LIST"])
    torch.save({"model": Evil(F["MARK"]), "config": {}}, F["EVIL"])
    for name, arr in [("EMPTY_NPY", np.zeros(0, np.int64)), ("TWO_D", np.zeros((3, 2), np.int64)),
                      ("FLOAT_ROWS", np.array([0.5, 1.5])), ("DUP", np.array([1, 1, 2])),
                      ("RANGE", np.array([0, 10 ** 6])), ("NAN_SCORES", np.array([np.nan] * 200, np.float32)),
                      ("SHORT_SCORES", np.ones(10, np.float32)), ("STR_SCORES", np.array(["a"] * 200))]:
        F[name] = j(name.lower() + ".npy")
        np.save(F[name], arr)
    F["OBJ_NPY"] = j("objects.npy")
    np.save(F["OBJ_NPY"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    F["UNWRITABLE"] = "/proc/bad_inputs/out" if os.path.isdir("/proc/self") else None
    # folder imports: F["dir:NAME"] is a folder of images with a captions.jsonl
    ok = [row(f"{i}.png", f"picture {i}") for i in range(6)]
    bad = {"image-int": row(5), "image-null": row(None), "image-empty": row(""), "image-list": row(["0.png"]),
           "parent": row("../outside.png"), "absolute": row(j("outside.png")), "nested-parent": row("x/../../outside.png"),
           "missing": row("gone.png"), "not-image": row("captions.jsonl"), "a-folder": row("."),
           "caption-int": row("0.png", 5), "caption-null": row("0.png", None), "defect-neg": row("0.png", defect=-1),
           "defect-str": row("0.png", defect="x"), "defect-float": row("0.png", defect=1.5),
           "defect-bool": row("0.png", defect=True), "defect-huge": row("0.png", defect=10 ** 12),
           "malformed": '{"image": "0.png", "caption"', "no-caption": json.dumps({"image": "0.png"}),
           "json-list": "[1, 2]", "utf8": b'{"image": "0.png", "caption": "caf\xe9"}', "nul": row("0.png\u0000")}
    Image.new("RGB", (20, 20)).save(j("outside.png"))
    for name, line in bad.items():
        F["dir:" + name] = write_folder(j("folders", name), ok[:3] + [line] + ok[3:])
    F["dir:ok"] = write_folder(j("folders", "ok"), ok)
    F["dir:specials"] = write_folder(j("folders", "specials"), ok[:3] + [row("3.png", "<pad>"), row("4.png", "<null>"),
                                                                        row("5.png", "")])
    F["SPECIALS"] = j("specials")  # captions "<pad>", "<null>" and "": they must not become all-padding rows
    quiet(data.main, ["--out", F["SPECIALS"], "--from-folder", F["dir:specials"], "--size", "16", "--n-val", "1",
                      "--n-test", "1"])
    F["dir:two"] = write_folder(j("folders", "two"), ok[:2])
    F["dir:empty"] = write_folder(j("folders", "empty"), [])
    F["dir:no-index"] = j("folders", "no-index")
    os.makedirs(F["dir:no-index"])
    F["dir:all-defective"] = write_folder(j("folders", "all-defective"), [row(f"{i}.png", defect=1) for i in range(6)])
    # CIFAR-10 roots
    F["cifar:ok"] = cifar(j("cifar", "ok"))
    F["cifar:evil-meta"] = cifar(j("cifar", "evil-meta"), raw_meta=pickle.dumps(Evil(F["MARK"])))
    F["cifar:evil-batch"] = cifar(j("cifar", "evil-batch"), batch={b"labels": [0], b"data": Evil(F["MARK"])})
    F["cifar:os-system"] = cifar(j("cifar", "os-system"), raw_meta=b"cos\nsystem\n(S'touch " + F["MARK"].encode() +
                                 b"'\ntR.")
    F["cifar:truncated"] = cifar(j("cifar", "truncated"), raw_meta=pickle.dumps({b"label_names": [b"cat"]})[:-5])
    F["cifar:shape"] = cifar(j("cifar", "shape"), batch={b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)})
    F["cifar:labels"] = cifar(j("cifar", "labels"), batch={b"labels": [0, 7], b"data": np.zeros((2, 3072), np.uint8)})
    F["cifar:meta-list"] = cifar(j("cifar", "meta-list"), raw_meta=pickle.dumps([1, 2, 3]))
    F["cifar:none"] = j("cifar", "none")
    os.makedirs(F["cifar:none"])
    return F


# ----------------------------------------------------------------------------------------------------------------
# The cases

def cases(F):
    """Every case, as (name, script, argv, output path, accept?, words the message must hold)."""
    j = lambda *p: os.path.join(F["root"], "out", *p)  # outputs: fresh paths under OUT, one per case
    under_file = os.path.join(F["FILE"], "sub")
    C = []

    def add(name, script, argv, out, accept=False, says=(), **kw):
        C.append(Case(f"{script}: {name}", script, argv, out, accept, says, **kw))

    def outs(script, base, folder=True, ext=""):  # --out under a file, at a file, unwritable
        add("--out under a file", script, base + ["--out", under_file + ext], under_file + ext)
        add("--out is a file" if folder else "--out is a folder", script,
            base + ["--out", F["FILE"] if folder else F["root"]], F["FILE"] if folder else F["root"])
        if F["UNWRITABLE"]:
            add("--out unwritable", script, base + ["--out", F["UNWRITABLE"] + ext], F["UNWRITABLE"] + ext)

    def copy_of(src, dst):  # a fresh copy of a run folder for a --resume case
        return lambda: (shutil.rmtree(dst, ignore_errors=True), shutil.copytree(src, dst))

    def no_mark():  # (and removed, so that the next case is judged on its own)
        if os.path.exists(F["MARK"]):
            os.remove(F["MARK"])
            return f"{F['MARK']} was created: code in the file ran"
        return None

    # data.py
    o = j("data")
    for name, argv, says in [("size 20", ["--size", "20"], "--size"), ("unknown defects", ["--defects", "x"], "--defects"),
                             ("n-train 0", ["--n-train", "0"], "--n-train"), ("n-val -1", ["--n-val", "-1"], "--n-val"),
                             ("n-test 0", ["--n-test", "0"], "--n-test"), ("seed not a number", ["--seed", "x"], "--seed"),
                             ("max-objects 3", ["--max-objects", "3"], "--max-objects"),
                             ("unknown flag", ["--bogus"], "--bogus"), ("size nan", ["--size", "nan"], "--size"),
                             ("folder and cifar together", ["--from-folder", F["dir:ok"], "--from-cifar10",
                                                            F["cifar:ok"]], "--from-cifar10")]:
        add(name, "data", ["--out", o] + argv, o, says=(says,))
    add("no --out", "data", [], o, says=("--out",))
    outs("data", ["--n-train", "20", "--n-val", "2", "--n-test", "2", "--size", "16"])
    for name in ["image-int", "image-null", "image-empty", "image-list", "parent", "absolute", "nested-parent",
                 "missing", "not-image", "a-folder", "caption-int", "caption-null", "defect-neg", "defect-str",
                 "defect-float", "defect-bool", "defect-huge", "malformed", "no-caption", "json-list", "utf8", "nul"]:
        add(f"folder: {name}", "data", ["--out", o, "--from-folder", F["dir:" + name], "--size", "16"], o,
            says=("captions.jsonl:4",))
    for name in ["two", "empty", "no-index", "all-defective"]:
        add(f"folder: {name}", "data", ["--out", o, "--from-folder", F["dir:" + name], "--size", "16"], o)
    add("folder: missing folder", "data", ["--out", o, "--from-folder", j("nowhere")], o)
    for name in ["evil-meta", "evil-batch", "os-system", "truncated", "shape", "labels", "meta-list", "none"]:
        add(f"cifar: {name}", "data", ["--out", o, "--from-cifar10", F["cifar:" + name], "--size", "16"], o,
            after=no_mark)
    def real_words():  # every row has a real token: "<pad>" as a caption is a word, read as <unk>
        d = [data.load_dataset(j("data-specials"), s) for s in ["train", "val", "test"]]
        bad = [c for x in d for c, t in zip(x["captions"], x["tokens"]) if not (t[0] > 0 and t[0] != 2)]
        return f"captions {bad} became padding or the null caption" if bad else None
    add("folder: captions <pad>, <null> and empty (accept: <unk>)", "data",
        ["--out", j("data-specials"), "--from-folder", F["dir:specials"], "--size", "16", "--n-val", "1",
         "--n-test", "1"], j("data-specials"), accept=True, after=real_words)
    add("cifar: a real-format batch (accept)", "data", ["--out", j("data-cifar"), "--from-cifar10", F["cifar:ok"],
                                                        "--size", "16"], j("data-cifar"), accept=True, after=no_mark)
    add("n-val 8 (accept)", "data", ["--out", j("data-val8"), "--size", "16", "--n-train", "20", "--n-val", "8",
                                     "--n-test", "2"], j("data-val8"), accept=True)

    # proxy.py
    o = j("proxy")
    base = ["--data", F["D"], "--preset", "quick", "--steps", "2", "--batch-size", "8", "--draws", "1",
            "--report", "val", "--device", "cpu"]
    for name, argv, says in [("steps 0", ["--steps", "0"], "--steps"), ("steps -1", ["--steps", "-1"], "--steps"),
                             ("batch-size 0", ["--batch-size", "0"], "--batch-size"), ("lr 0", ["--lr", "0"], "--lr"),
                             ("lr -1", ["--lr", "-1"], "--lr"), ("lr nan", ["--lr", "nan"], "--lr"),
                             ("lr inf", ["--lr", "inf"], "--lr"), ("lr text", ["--lr", "fast"], "--lr"),
                             ("draws 0", ["--draws", "0"], "--draws"), ("ckpt-every 0", ["--ckpt-every", "0"],
                                                                        "--ckpt-every"),
                             ("preset bogus", ["--preset", "huge"], "--preset"), ("split test", ["--split", "test"],
                                                                                  "--split"),
                             ("report bogus", ["--report", "x"], "--report"), ("device tpu", ["--device", "tpu"],
                                                                              "--device"),
                             ("no --data", None, "--data")]:
        add(name, "proxy", (base if argv is not None else base[2:]) + (argv or []) + ["--out", o], o, says=(says,))
    if not torch.cuda.is_available():
        add("device cuda without CUDA", "proxy", base + ["--device", "cuda", "--out", o], o, says=("cuda",))
    for name, path in [("missing data", j("nowhere")), ("data is a garbage file", F["GARBAGE"]),
                       ("corrupt val.pt", F["BADVAL"]), ("32px train beside 16px val", F["MIXED"])]:
        add(name, "proxy", ["--data", path] + base[2:] + ["--out", o], o)
    for name, key in [("subset empty", "EMPTY_NPY"), ("subset 2-D", "TWO_D"), ("subset floats", "FLOAT_ROWS"),
                      ("subset duplicates", "DUP"), ("subset out of range", "RANGE"), ("subset not npy", "GARBAGE"),
                      ("subset pickled objects", "OBJ_NPY")]:
        add(name, "proxy", base + ["--subset", F[key], "--out", o], o, says=(F[key],))
    add("subset missing", "proxy", base + ["--subset", j("nowhere.npy"), "--out", o], o)
    outs("proxy", base)
    r = j("proxy-resume")
    for name, argv, says in [("resume: another seed", ["--seed", "1"], "seed"),
                             ("resume: another batch size", ["--batch-size", "4"], "batch_size"),
                             ("resume: other data of the same size", ["--data", F["D2"]], "data"),
                             ("resume: clean rows only", ["--clean-only"], "data"),
                             ("resume: another subset", ["--subset", F["SUB"]], "data")]:
        add(name, "proxy", base + ["--steps", "4", "--resume", "--out", r] + argv, r, says=(says,),
            before=copy_of(F["P"], r))
    rg = j("proxy-garbage")
    add("resume: corrupt proxy.pt", "proxy", base + ["--resume", "--out", rg], rg,
        before=lambda: (os.makedirs(rg, exist_ok=True), shutil.copy(F["GARBAGE"], os.path.join(rg, "proxy.pt"))))
    add("val split of 8 rows (accept)", "proxy", ["--data", F["V8"]] + base[2:] + ["--out", j("proxy-val8")],
        j("proxy-val8"), accept=True)
    add("resume with a lower --lr (accept)", "proxy", base + ["--steps", "4", "--lr", "1e-4", "--resume", "--out", r],
        r, accept=True, before=copy_of(F["P"], r))

    # metagrad.py
    o = j("meta")
    pp = os.path.join(F["P"], "proxy.pt")
    base = ["--data", F["D"], "--proxy", pp, "--steps", "2", "--batch-size", "8", "--primary-warmup", "2",
            "--draws", "1", "--device", "cpu"]
    for name, argv, says in [("steps 0", ["--steps", "0"], "--steps"), ("batch-size 0", ["--batch-size", "0"],
                                                                         "--batch-size"),
                             ("lr nan", ["--lr", "nan"], "--lr"), ("lr 0", ["--lr", "0"], "--lr"),
                             ("rater-lr 0", ["--rater-lr", "0"], "--rater-lr"),
                             ("rater-lr inf", ["--rater-lr", "inf"], "--rater-lr"),
                             ("eta 0", ["--method", "exact", "--eta", "0"], "--eta"),
                             ("eta nan", ["--method", "exact", "--eta", "nan"], "--eta"),
                             ("gamma 2", ["--gamma", "2"], "--gamma"), ("gamma nan", ["--gamma", "nan"], "--gamma"),
                             ("temperature 0", ["--temperature", "0"], "--temperature"),
                             ("temperature -inf", ["--temperature", "-inf"], "--temperature"),
                             ("logit-decay -1", ["--logit-decay", "-1"], "--logit-decay"),
                             ("logit-decay nan", ["--logit-decay", "nan"], "--logit-decay"),
                             ("draws 0", ["--draws", "0"], "--draws"), ("log-every 0", ["--log-every", "0"],
                                                                        "--log-every"),
                             ("ckpt-every 0", ["--ckpt-every", "0"], "--ckpt-every"),
                             ("primary-warmup -1", ["--primary-warmup", "-1"], "--primary-warmup"),
                             ("simplified with exact", ["--simplified", "--method", "exact"], "--simplified"),
                             ("method bogus", ["--method", "best"], "--method"),
                             ("schedule bogus", ["--schedule", "x"], "--schedule")]:
        add(name, "metagrad", base + argv + ["--out", o], o, says=(says,))
    for name, path in [("proxy missing", j("nowhere.pt")), ("proxy garbage", F["GARBAGE"]),
                       ("proxy empty file", F["EMPTY"]), ("proxy a list", F["LIST"]), ("proxy holds code", F["EVIL"]),
                       ("proxy a dataset", os.path.join(F["D"], "train.pt")), ("proxy 32px", F["P32"]),
                       ("proxy other vocabulary", F["PVOCAB"]), ("proxy shorter captions", F["PSHORT"])]:
        add(name, "metagrad", ["--data", F["D"], "--proxy", path] + base[4:] + ["--out", o], o, says=(path,),
            after=no_mark)
    for name, path in [("primary missing", j("nowhere.pt")), ("primary garbage", F["GARBAGE"]),
                       ("primary of another size", F["P32"]), ("primary warmed on train, not val", pp)]:
        add(name, "metagrad", base + ["--primary", path, "--out", o], o, says=(path,))
    for name, path in [("corrupt val.pt", F["BADVAL"]), ("32px train beside 16px val", F["MIXED"]),
                       ("missing data", j("nowhere"))]:
        add(name, "metagrad", ["--data", path] + base[2:] + ["--out", o], o)
    outs("metagrad", base)
    r = j("meta-resume")
    for name, argv, says in [("resume: other data", ["--data", F["D2"]], "data_fingerprint"),
                             ("resume: another seed", ["--seed", "3"], "seed"),
                             ("resume: no group head", ["--no-group"], "no_group"),
                             ("resume: another method", ["--method", "exact"], "method")]:
        add(name, "metagrad", base + ["--steps", "4", "--resume", "--out", r] + argv, r, says=(says,),
            before=copy_of(F["M"], r))
    add("resume: 32px data and proxy", "metagrad", ["--data", F["D32"], "--proxy", F["P32"]] + base[4:] +
        ["--steps", "4", "--resume", "--out", r], r, says=("data_fingerprint",), before=copy_of(F["M"], r))

    # rater.py
    o = j("rater", "scores.npy")
    rp = os.path.join(F["M"], "rater.pt")
    base = ["--data", F["D"], "--rater", rp, "--device", "cpu"]
    for name, argv, says in [("shuffles 0", ["--shuffles", "0"], "--shuffles"),
                             ("batch-size 0", ["--batch-size", "0"], "--batch-size"),
                             ("seed text", ["--seed", "one"], "--seed")]:
        add(name, "rater", base + argv + ["--out", o], o, says=(says,))
    add("out not .npy", "rater", base + ["--out", j("rater", "scores.txt")], j("rater", "scores.txt"), says=(".npy",))
    os.makedirs(j("rater", "dir.npy"), exist_ok=True)
    add("out a folder named .npy", "rater", base + ["--out", j("rater", "dir.npy")], j("rater", "dir.npy"))
    for name, path in [("rater missing", j("nowhere.pt")), ("rater garbage", F["GARBAGE"]), ("rater a proxy", pp),
                       ("rater holds code", F["EVIL"]), ("rater a metagrad state", os.path.join(F["M"],
                                                                                                "metagrad_state.pt"))]:
        add(name, "rater", ["--data", F["D"], "--rater", path, "--device", "cpu", "--out", o], o, says=(path,),
            after=no_mark)
    add("rater for 16px, data 32px", "rater", ["--data", F["D32"], "--rater", rp, "--out", o], o)
    add("data missing", "rater", ["--data", j("nowhere"), "--rater", rp, "--out", o], o)
    outs("rater", base, folder=False, ext=".npy")

    # prune.py
    o = j("prune", "subset.npy")
    base = ["--scores", F["S"], "--strategy", "shift_gsample", "--keep", "0.5"]
    for name, argv, says in [("keep 0", ["--keep", "0"], "--keep"), ("keep 1.5", ["--keep", "1.5"], "--keep"),
                             ("keep nan", ["--keep", "nan"], "--keep"), ("count 0", ["--count", "0"], "--count"),
                             ("keep and count", ["--count", "5"], "--count"), ("sigma 0", ["--sigma", "0"], "--sigma"),
                             ("sigma nan", ["--sigma", "nan"], "--sigma"), ("mu inf", ["--mu", "inf"], "--mu"),
                             ("beta 1", ["--strategy", "ccs", "--beta", "1"], "--beta"),
                             ("strata 0", ["--strategy", "ccs", "--strata", "0"], "--strata"),
                             ("discard-top 100", ["--discard-top", "100"], "--discard-top"),
                             ("start 101", ["--strategy", "block", "--start", "101"], "--start"),
                             ("start nan", ["--strategy", "block", "--start", "nan"], "--start"),
                             ("strategy bogus", ["--strategy", "best"], "--strategy"),
                             ("data of another length", ["--data", F["D32"]], "rows")]:
        add(name, "prune", base + argv + ["--out", o], o, says=(says,))
    add("neither keep nor count", "prune", base[:4] + ["--out", o], o, says=("--keep",))
    add("count too many", "prune", base[:4] + ["--count", "100000", "--out", o], o, says=("--count",))
    add("no strategy", "prune", ["--scores", F["S"], "--keep", "0.5", "--out", o], o, says=("--strategy",))
    for name, key in [("scores NaN", "NAN_SCORES"), ("scores 2-D", "TWO_D"), ("scores empty", "EMPTY_NPY"),
                      ("scores strings", "STR_SCORES"), ("scores garbage", "GARBAGE"), ("scores pickled", "OBJ_NPY")]:
        add(name, "prune", ["--scores", F[key]] + base[2:] + ["--out", o], o, says=(F[key],))
    add("scores missing", "prune", ["--scores", j("nowhere.npy")] + base[2:] + ["--out", o], o)
    add("scores shorter than the data", "prune", ["--scores", F["SHORT_SCORES"]] + base[2:] +
        ["--data", F["D"], "--out", o], o)
    add("out not .npy", "prune", base + ["--out", j("prune", "subset.txt")], j("prune", "subset.txt"), says=(".npy",))
    outs("prune", base, folder=False, ext=".npy")
    for name, argv, says in [("score bogus", ["--score", "beauty", "--data", F["D"]], "--score"),
                             ("score without data", ["--score", "clarity"], "--data"),
                             ("score loss without proxy", ["--score", "loss", "--data", F["D"]], "--proxy"),
                             ("score loss, proxy 32px", ["--score", "loss", "--data", F["D"], "--proxy", F["P32"]],
                              "32px"),
                             ("score loss, proxy of another vocabulary", ["--score", "loss", "--data", F["D"],
                                                                          "--proxy", F["PVOCAB"]], "vocabulary"),
                             ("score loss, proxy garbage", ["--score", "loss", "--data", F["D"], "--proxy",
                                                            F["GARBAGE"]], F["GARBAGE"]),
                             ("score loss, draws 0", ["--score", "loss", "--data", F["D"], "--proxy", pp, "--draws",
                                                      "0"], "--draws"),
                             ("score, corrupt data", ["--score", "clarity", "--data", F["GARBAGE"]], F["GARBAGE"])]:
        add(name, "prune", argv + ["--out", o], o, says=(says,))
    add("score clarity, --out under a file", "prune", ["--score", "clarity", "--data", F["D"], "--out",
                                                       under_file + ".npy"], under_file + ".npy")
    add("keep 1 (accept)", "prune", ["--scores", F["S"], "--strategy", "top_k", "--keep", "1", "--out",
                                     j("prune-all.npy")], j("prune-all.npy"), accept=True)

    # train_t2i.py
    o = j("t2i")
    base = ["--data", F["D"], "--steps", "2", "--width", "16", "--depth", "1", "--batch-size", "8", "--grid-every",
            "0", "--device", "cpu"]
    for name, argv, says in [("steps 0", ["--steps", "0"], "--steps"), ("batch-size 0", ["--batch-size", "0"],
                                                                         "--batch-size"),
                             ("lr 0", ["--lr", "0"], "--lr"), ("lr nan", ["--lr", "nan"], "--lr"),
                             ("lr -inf", ["--lr", "-inf"], "--lr"), ("width 0", ["--width", "0"], "--width"),
                             ("width 30", ["--width", "30"], "--width"), ("depth 0", ["--depth", "0"], "--depth"),
                             ("ema 1", ["--ema", "1"], "--ema"), ("ema nan", ["--ema", "nan"], "--ema"),
                             ("ckpt-every 0", ["--ckpt-every", "0"], "--ckpt-every"),
                             ("snapshot-every -1", ["--snapshot-every", "-1"], "--snapshot-every"),
                             ("grid-every -1", ["--grid-every", "-1"], "--grid-every"),
                             ("guide-at 2", ["--guide-at", "2"], "--guide-at"),
                             ("guide-at nan", ["--guide-at", "nan"], "--guide-at"),
                             ("super-batch-factor 0.5", ["--super-batch-factor", "0.5"], "--super-batch-factor"),
                             ("super-batch-factor inf", ["--super-batch-factor", "inf"], "--super-batch-factor"),
                             ("chunks 0", ["--chunks", "0"], "--chunks"),
                             ("temperature -1", ["--temperature", "-1"], "--temperature"),
                             ("temperature nan", ["--temperature", "nan"], "--temperature"),
                             ("online bogus", ["--online", "best"], "--online"),
                             ("online jest without a reference", ["--online", "jest"], "--reference"),
                             ("reference with online none", ["--reference", pp], "--reference"),
                             ("reference garbage", ["--online", "jest", "--reference", F["GARBAGE"]], F["GARBAGE"]),
                             ("reference holds code", ["--online", "jest", "--reference", F["EVIL"]], F["EVIL"]),
                             ("reference 32px", ["--online", "jest", "--reference", F["P32"]], F["P32"]),
                             ("reference of another vocabulary", ["--online", "jest", "--reference", F["PVOCAB"]],
                              "vocabulary"),
                             ("subset out of range", ["--subset", F["RANGE"]], F["RANGE"]),
                             ("preset bogus", ["--preset", "tiny"], "--preset")]:
        add(name, "train_t2i", base + argv + ["--out", o], o, says=(says,), after=no_mark)
    for name, path in [("corrupt val.pt", F["BADVAL"]), ("32px train beside 16px val", F["MIXED"]),
                       ("missing data", j("nowhere"))]:
        add(name, "train_t2i", ["--data", path] + base[2:] + ["--out", o], o)
    outs("train_t2i", base)
    r = j("t2i-resume")
    for name, argv, says in [("resume: another subset", ["--subset", F["SUB"]], "data"),
                             ("resume: other data", ["--data", F["D2"]], "data"),
                             ("resume: another seed", ["--seed", "2"], "seed"),
                             ("resume: another EMA", ["--ema", "0.5"], "ema_decay"),
                             ("resume: another batch size", ["--batch-size", "4"], "batch_size"),
                             ("resume: online selection added", ["--online", "hard_learner"], "select"),
                             ("resume: another width", ["--width", "32"], "model size")]:
        add(name, "train_t2i", base + ["--steps", "4", "--resume", "--out", r] + argv, r, says=(says,),
            before=copy_of(F["T"], r))
    add("data with captions <pad> and <null> (accept)", "train_t2i", ["--data", F["SPECIALS"]] + base[2:] +
        ["--batch-size", "16", "--out", j("t2i-specials")], j("t2i-specials"), accept=True)
    add("lr 1e30: a non-finite loss", "train_t2i", base + ["--lr", "1e30", "--steps", "20", "--out", j("t2i-nan")], None,
        says=("non-finite loss", "no checkpoint written yet"))
    add("val split of 8 rows (accept)", "train_t2i", ["--data", F["V8"]] + base[2:] + ["--out", j("t2i-val8")],
        j("t2i-val8"), accept=True)

    # evaluate.py
    o = j("eval", "metrics.json")
    mp = os.path.join(F["T"], "model.pt")
    base = ["--data", F["D"], "--model", mp, "--n-samples", "4", "--steps", "2", "--encoder-steps", "5",
            "--batch-size", "4", "--device", "cpu"]
    for name, argv, says in [("cfg nan", ["--cfg", "nan"], "--cfg"), ("cfg inf", ["--cfg", "inf"], "--cfg"),
                             ("guidance nan", ["--guide", mp, "--guidance", "nan"], "--guidance"),
                             ("guidance without guide", ["--guidance", "2"], "--guide"),
                             ("guide 32px", ["--guide", F["P32"]], F["P32"]),
                             ("guide garbage", ["--guide", F["GARBAGE"]], F["GARBAGE"]),
                             ("guide of another vocabulary", ["--guide", F["PVOCAB"]], F["PVOCAB"]),
                             ("n-samples 1", ["--n-samples", "1"], "--n-samples"),
                             ("n-samples over the test prompts", ["--n-samples", "41"], "--repeat"),
                             ("batch-size 0", ["--batch-size", "0"], "--batch-size"),
                             ("steps 0", ["--steps", "0"], "--steps"),
                             ("encoder-steps 0", ["--encoder-steps", "0"], "--encoder-steps"),
                             ("device bogus", ["--device", "gpu0"], "--device"),
                             ("inception missing", ["--inception", j("nowhere.pt")], "nowhere.pt"),
                             ("inception garbage", ["--inception", F["GARBAGE"]], F["GARBAGE"]),
                             ("inception a list", ["--inception", F["LIST"]], F["LIST"])]:
        add(name, "evaluate", base + argv + ["--out", o], o, says=(says,))
    for name, path in [("model missing", j("nowhere.pt")), ("model garbage", F["GARBAGE"]),
                       ("model holds code", F["EVIL"]), ("model a dataset", os.path.join(F["D"], "test.pt")),
                       ("model 32px", F["P32"]), ("model of another vocabulary", F["PVOCAB"]),
                       ("model of shorter captions", F["PSHORT"])]:
        add(name, "evaluate", ["--data", F["D"], "--model", path] + base[4:] + ["--out", o], o, says=(path,),
            after=no_mark)
    add("data missing", "evaluate", ["--data", j("nowhere"), "--model", mp] + base[4:] + ["--out", o], o)
    add("data without test.pt", "evaluate", ["--data", F["dir:ok"], "--model", mp] + base[4:] + ["--out", o], o)
    os.makedirs(j("eval", "adir"), exist_ok=True)
    add("out a folder", "evaluate", base + ["--out", j("eval", "adir")], j("eval", "adir"))
    os.makedirs(j("eval", "grid_samples.png"), exist_ok=True)
    add("out whose picture would be a folder", "evaluate", base + ["--out", j("eval", "grid.json")],
        j("eval", "grid.json"))
    outs("evaluate", base, folder=False, ext=".json")
    add("a model evaluated (accept)", "evaluate", base + ["--out", j("eval-ok", "m.json")], j("eval-ok", "m.json"),
        accept=True)

    # toy2d.py
    o = j("toy")
    base = ["--preset", "tiny", "--seeds", "1", "--device", "cpu"]
    for name, argv, says in [("lr 0", ["--lr", "0"], "--lr"), ("lr nan", ["--lr", "nan"], "--lr"),
                             ("factor 0.5", ["--factor", "0.5"], "--factor"), ("factor nan", ["--factor", "nan"],
                                                                               "--factor"),
                             ("temperature 0", ["--temperature", "0"], "--temperature"),
                             ("guidance 0", ["--guidance", "0"], "--guidance"),
                             ("guidance inf", ["--guidance", "inf"], "--guidance"),
                             ("bad-frac 1", ["--bad-frac", "1"], "--bad-frac"),
                             ("bad-frac nan", ["--bad-frac", "nan"], "--bad-frac"),
                             ("chunks 0", ["--chunks", "0"], "--chunks"), ("chunks over the batch", ["--chunks",
                                                                                                     "1000"], "--chunks"),
                             ("steps 0", ["--steps", "0"], "sizes"), ("batch-size 0", ["--batch-size", "0"], "sizes"),
                             ("n-eval 1", ["--n-eval", "1"], "--n-eval"), ("seeds 0", ["--seeds", "0"], "--seeds"),
                             ("online bogus", ["--online", "best"], "--online"),
                             ("online twice", ["--online", "jest,jest"], "--online"),
                             ("online empty", ["--online", ","], "--online"),
                             ("preset bogus", ["--preset", "huge"], "--preset")]:
        add(name, "toy2d", base + argv + ["--out", o], o, says=(says,))
    outs("toy2d", base)
    add("tiny preset (accept)", "toy2d", base + ["--online", "none", "--out", j("toy-ok")], j("toy-ok"), accept=True)

    # ablate.py (refusals only: an accepted grid is tests/test_ablate.py's job)
    runs, res = j("ablate-runs"), j("ablate-results")
    base = ["--runs", runs, "--out", res, "--device", "cpu"]
    for name, argv, says in [("seeds 0", ["--seeds", "0"], "--seeds"), ("workers 0", ["--workers", "0"], "--workers"),
                             ("preset bogus", ["--preset", "huge"], "--preset"), ("unknown flag", ["--fast"], "--fast"),
                             ("runs under a file", ["--runs", under_file], "--runs"),
                             ("out under a file", ["--out", under_file], "--out")]:
        add(name, "ablate", base + argv, runs, says=(says,))
    if F["UNWRITABLE"]:
        add("runs unwritable", "ablate", base + ["--runs", F["UNWRITABLE"]], F["UNWRITABLE"], says=("--runs",))
    if not torch.cuda.is_available():
        add("device cuda without CUDA", "ablate", base + ["--device", "cuda"], runs, says=("cuda",))
    locked = j("ablate-locked")
    add("runs folder locked by a running grid", "ablate", ["--runs", locked, "--out", res, "--device", "cpu"], locked,
        says=("in use", str(os.getpid())), before=lambda: hold_lock(locked))
    return C


def hold_lock(runs):
    """This process holds RUNS's lock, as a running grid would."""
    import ablate
    if not os.path.exists(os.path.join(runs, "ablate.lock")):
        ablate.lock_runs(runs)


# ----------------------------------------------------------------------------------------------------------------
# Running a case and judging it

def snapshot(path):
    """What is at `path`: None, or {relative path: (size, mtime)} of every file under it (or of it)."""
    if path is None or not os.path.exists(path):  # None: a run that fails after it started; its folder is its own
        return None
    if os.path.isfile(path):
        return {".": (os.path.getsize(path), os.path.getmtime(path))}
    return {os.path.relpath(os.path.join(d, f), path): (os.path.getsize(os.path.join(d, f)),
                                                         os.path.getmtime(os.path.join(d, f)))
            for d, _, files in os.walk(path) for f in files}


def run_forked(case, timeout):
    """The script's `if __name__ == "__main__"` in a child forked from this process; returns (exit code, stderr)."""
    err = tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: stderr to the file, stdout to nowhere, then the script as `python SCRIPT.py ARGV`
        code = 1
        try:
            os.dup2(err.fileno(), 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # not a test's capture
            sys.argv = [case.script + ".py", *case.argv]
            runpy.run_path(os.path.join(ROOT, case.script + ".py"), run_name="__main__")
            code = 0
        except SystemExit as e:  # as the interpreter turns sys.exit(x) into an exit code
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, f"timed out after {timeout} s"
        time.sleep(0.02)
    err.seek(0)
    return os.waitstatus_to_exitcode(status), err.read().decode(errors="replace")


def run_fresh(case, timeout):
    """`python SCRIPT.py ARGV` in a fresh interpreter."""
    try:
        r = subprocess.run([sys.executable, os.path.join(ROOT, case.script + ".py"), *case.argv], capture_output=True,
                           text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    return r.returncode, r.stderr


BAR = re.compile(r"\d+%\|.*\|.*(it/s|s/it)")  # a tqdm progress bar, where a script sets `disable` itself


def judge(case, code, err, before, after):
    """None if the case is handled, else why not."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not BAR.search(line)]
    if "Traceback" in err:
        return "traceback:\n    " + "\n    ".join(err.strip().splitlines()[-4:])
    if case.after is not None and case.after():
        return case.after()
    if case.accept:
        return None if code == 0 else f"exit {code} (expected 0): {err.strip()[-300:]}"
    if code != 2:
        return f"exit {code} (expected 2): {err.strip()[-300:]}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr:\n    " + "\n    ".join(lines[:6])
    missing = [w for w in case.says if w not in lines[0]]
    if missing:
        return f"the message does not say {missing}: {lines[0]}"
    if before != after:
        return f"wrote to {case.out}"
    return None


def run_case(case, fresh=False, timeout=300):
    """Run one case; returns (handled, the message or why it is not handled)."""
    if case.before:
        case.before()
    before = snapshot(case.out)
    code, err = (run_fresh if fresh or not hasattr(os, "fork") else run_forked)(case, timeout)
    if code is None:
        return False, err
    why = judge(case, code, err, before, snapshot(case.out))
    if why:
        return False, why
    return True, "accepted" if case.accept else err.strip().splitlines()[-1][:200]


def main(argv=None):
    p = argparse.ArgumentParser(description="Run the bad-input battery: every case in its own process.")
    p.add_argument("--only", default="", help="run the cases whose name contains this text")
    p.add_argument("--skip", default=None, help="leave out the cases whose name contains this text")
    p.add_argument("--fresh", action="store_true", help="a fresh `python SCRIPT.py` per case (slow) instead of a fork")
    p.add_argument("--list", action="store_true", help="list the cases and stop")
    p.add_argument("--keep", help="build the fixtures in this folder and keep it (default: a temporary folder)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    root = a.keep or tempfile.mkdtemp(prefix="bad_inputs_")
    os.makedirs(root, exist_ok=True)
    start = time.time()
    try:
        F = build(os.path.abspath(root))
        os.chdir(root)  # a script that writes to a relative default writes here, not into the repository
        todo = [c for c in cases(F) if a.only in c.name and not (a.skip and a.skip in c.name)]
        if a.list:
            print("\n".join(c.name for c in todo))
            return 0
        print(f"{len(todo)} cases; fixtures built in {time.time() - start:.0f} s")
        failed = []
        for c in todo:
            ok, msg = run_case(c, a.fresh)
            print(f"{'ok  ' if ok else 'FAIL'} {c.name}{'  [accept]' if c.accept else ''}\n       {msg}")
            if not ok:
                failed.append(c.name)
        print(f"\n{len(todo) - len(failed)} of {len(todo)} cases handled ({sum(c.accept for c in todo)} of them "
              f"documented acceptances) in {time.time() - start:.0f} s")
        for name in failed:
            print(f"  not handled: {name}")
        return 1 if failed else 0
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
