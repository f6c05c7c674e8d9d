"""tests/bad_inputs.py -- the bad-input battery (issue 13): every script given inputs a careful user might get wrong.

Run:     OMP_NUM_THREADS=1 python tests/bad_inputs.py [--only TEXT] [--skip TEXT] [--fresh] [--list]
A case is handled when its process
  refuses it: exit code 2, exactly one line on stderr (no "Traceback"), and nothing written to its output path; or
  accepts it (a documented acceptance, its name ends in "(accept)"): exit code 0, no traceback.
Each case runs as its own process: forked from this one after the scripts are imported (fast), or, with --fresh,
`python SCRIPT.py ...` in a fresh interpreter (slow, about 4 s a case). Progress bars are not messages: they are
switched off (TQDM_DISABLE=1), and one a script draws anyway is not counted as a line. Prints every case and the
count handled; exits 1 if any case is not handled. tests/test_inputs.py runs a subset of the cases in the suite.
"""
import argparse
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
if __name__ == "__main__":  # before tqdm is imported (it reads the variable then); imported by a test, bars are filtered
    os.environ["TQDM_DISABLE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SCRIPTS = ["data", "proxy", "metagrad", "rater", "prune", "train_t2i", "evaluate", "toy2d", "ablate"]
for _name in SCRIPTS:  # imported once here: every forked case starts from them
    __import__(_name)
import data  # noqa: E402
import proxy  # noqa: E402
from bad_input_cases import FOLDERS, TABLES, row  # noqa: E402


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


def random_model(path, vocab, size=16, length=20):
    torch.manual_seed(0)
    proxy.save_checkpoint(path, proxy.DiT(image_size=size, patch=max(2, size // 8), width=16, depth=1, heads=2,
                                          text_depth=1, vocab_size=len(vocab), max_tokens=length), 0, vocab)
    return path


def build_data(F, j):
    for key, argv in [("D", []), ("D2", ["--seed", "1"]), ("D32", ["--size", "32", "--n-train", "30", "--n-val", "6",
                                                                    "--n-test", "6"]),
                      ("V8", ["--n-train", "60", "--n-val", "8", "--n-test", "20"])]:
        F[key] = j(key.lower())
        quiet(data.main, ["--out", F[key], "--size", "16", "--n-train", "200", "--n-val", "40", "--n-test", "40",
                          *argv])
    F["BADVAL"], F["MIXED"] = j("badval"), j("mixed")
    shutil.copytree(F["D"], F["BADVAL"])
    with open(j("badval", "val.pt"), "wb") as f:
        f.write(b"\x80\x02 truncated")
    os.makedirs(F["MIXED"])
    for split, src in [("train", F["D32"]), ("val", F["D"]), ("test", F["D"])]:
        shutil.copy(os.path.join(src, f"{split}.pt"), j("mixed", f"{split}.pt"))
    ok = [row(f"{i}.png", f"picture {i}") for i in range(6)]
    os.makedirs(j("folders"))
    Image.new("RGB", (20, 20)).save(j("folders", "outside.png"))  # what "../outside.png" would read
    for name, line in FOLDERS.items():
        line = row(j("folders", "outside.png")) if line is None else line  # "absolute": a path outside the folder
        F["dir_" + name] = write_folder(j("folders", name), ok[:3] + [line] + ok[3:])
    for name, lines in [("ok", ok), ("two", ok[:2]), ("empty", []), ("all_defective", [row(f"{i}.png", defect=1)
                                                                                        for i in range(6)]),
                        ("specials", ok[:3] + [row("3.png", "<pad>"), row("4.png", "<null>"), row("5.png", "")])]:
        F["dir_" + name] = write_folder(j("folders", name), lines)
    F["dir_no_index"] = j("folders", "no_index")
    os.makedirs(F["dir_no_index"])
    F["SPECIALS"] = j("specials")  # captions "<pad>", "<null>" and "": they must not become all-padding rows
    quiet(data.main, ["--out", F["SPECIALS"], "--from-folder", F["dir_specials"], "--size", "16", "--n-val", "1",
                      "--n-test", "1"])


def build(root):
    """Every input the cases read, made once (seconds): F = {name: path}."""
    j = lambda *p: os.path.join(root, *p)
    F = {"ROOT": root, "OUT": j("out"), "MARK": j("EVIL_RAN"), "FILE": j("a_file.txt"), "UNDER": j("a_file.txt", "sub"),
         "UNWRITABLE": "/proc/bad_inputs/out" if os.path.isdir("/proc/self") else ""}
    build_data(F, j)
    import metagrad
    import prune
    import rater
    import train_t2i
    F["P"], F["M"], F["T"], F["S"], F["SUB"] = j("proxy"), j("rate"), j("target"), j("scores.npy"), j("subset.npy")
    F["PP"], F["RATER"], F["MODEL"] = j("proxy", "proxy.pt"), j("rate", "rater.pt"), j("target", "model.pt")
    quiet(proxy.main, ["--data", F["D"], "--out", F["P"], "--preset", "quick", "--steps", "2", "--batch-size", "8",
                       "--draws", "1", "--device", "cpu"])
    quiet(metagrad.main, ["--data", F["D"], "--proxy", F["PP"], "--out", F["M"], "--steps", "2", "--batch-size", "8",
                          "--primary-warmup", "2", "--draws", "1", "--device", "cpu"])
    quiet(rater.main, ["--data", F["D"], "--rater", F["RATER"], "--out", F["S"], "--device", "cpu"])
    quiet(prune.main, ["--scores", F["S"], "--strategy", "top_k", "--keep", "0.5", "--out", F["SUB"]])
    quiet(train_t2i.main, ["--data", F["D"], "--out", F["T"], "--steps", "2", "--width", "16", "--depth", "1",
                           "--batch-size", "8", "--grid-every", "0", "--device", "cpu"])
    vocab = data.load_dataset(F["D"])["vocab"]
    F["P32"] = random_model(j("p32.pt"), vocab, size=32)
    F["PVOCAB"] = random_model(j("pvocab.pt"), vocab[:3] + vocab[3:][::-1])  # same size, other words
    F["PSHORT"] = random_model(j("pshort.pt"), vocab, length=5)  # captions cut to 5 tokens
    open(F["FILE"], "w").write("not a folder\n")
    for name, content in [("GARBAGE", b"this is not a torch file"), ("EMPTY", b"")]:
        F[name] = j(name.lower() + ".pt")
        open(F[name], "wb").write(content)
    F["LIST"], F["EVIL"] = j("list.pt"), j("evil.pt")
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
    for d in ["rater/dir.npy", "eval/adir", "eval/grid_samples.png"]:
        os.makedirs(os.path.join(F["OUT"], d))
    return F


# ----------------------------------------------------------------------------------------------------------------
# The cases (tests/bad_input_cases.py holds their tables)

class Battery:
    """Collects the cases: `rows` adds a table of them (see bad_input_cases.py), `add` one."""

    def __init__(self, F):
        self.F, self.cases = F, []
        self.Q = {k: shlex.quote(v) for k, v in F.items()}

    def add(self, script, name, argv, accept=False, says=(), out_flag="--out", **kw):
        at = [i for i, a in enumerate(argv) if a == out_flag]  # the output path: the last --out
        out = argv[at[-1] + 1] if at and at[-1] + 1 < len(argv) else None
        self.cases.append(Case(f"{script}: {name}", script, argv, out, accept or name.endswith("(accept)"), says, **kw))

    def rows(self, script, base, table, **kw):
        for line in table.strip().splitlines():
            name, argv, says = (x.strip() for x in line.split("|"))
            if "{UNWRITABLE}" in argv and not self.F["UNWRITABLE"]:
                continue
            self.add(script, name, base + shlex.split(argv.format(**self.Q)),
                     says=[w.strip().format(**self.F) for w in says.split(";") if w.strip()], **kw)

    def outputs(self, script, base, file_ext=None):
        """--out under a file, at a file (or a folder, for a file output), in a place nobody can write."""
        ext = file_ext or ""
        self.rows(script, base, f"""
            --out under a file | --out {{UNDER}}{ext} | {{FILE}}
            {'--out is a folder' if file_ext else '--out is a file'} | --out {{{'ROOT' if file_ext else 'FILE'}}} |
            --out unwritable | --out {{UNWRITABLE}}{ext} | --out""")

    def copy_of(self, src, dst):
        """A fresh copy of a run folder, for a --resume case."""
        return lambda: (shutil.rmtree(dst, ignore_errors=True), shutil.copytree(src, dst))

    def no_mark(self):
        """Whether a crafted file ran code (the mark is removed, so that the next case is judged on its own)."""
        if os.path.exists(self.F["MARK"]):
            os.remove(self.F["MARK"])
            return f"{self.F['MARK']} was created: code in the file ran"
        return None


def cases(F):
    b = Battery(F)
    for make in TABLES:
        make(b)
    return b.cases


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
