"""data.py -- captioned shapes with known defects, and the .pt format every stage reads.

Reads:   nothing (generated set), or DIR/captions.jsonl + images (--from-folder)
Writes:  OUT/train.pt, OUT/val.pt, OUT/test.pt (and OUT/preview.png with --preview)
Run:     python data.py --out data/shapes [--n-train 8000 --size 32 --seed 0 --defects default --preview]

Why generated data: the claim we reproduce ("a well-chosen half of the data beats all of it") is only visible where
some samples hurt training, and only *checkable* where we know which: every training row carries a `defect` label
(0 = clean), so later stages can report how their ranking treats each kind of defect.

A clean image holds one or two objects (4 shapes x 6 colours x 2 sizes) in distinct cells of a 3x3 grid, captioned
from a template: "a small red circle at the top left and a large blue square at the bottom right". The defects are
misaligned (another image's caption), noise (70% uniform noise), blur (4x down and up), watermark (a bright stamp
over the bottom-right corner) and duplicate (copies of a few trivially simple images, "a red circle": uninformative).
"""
import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import sys
import tempfile

import numpy as np
import torch
from PIL import Image, ImageDraw

FORMAT_VERSION = 1
SIZES = (16, 32, 64)
SHAPES = ["circle", "square", "triangle", "diamond"]
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
           "yellow": (235, 220, 40), "magenta": (215, 50, 215), "cyan": (40, 215, 215)}
SCALES = {"small": 0.26, "large": 0.44}  # object radius as a fraction of the cell width
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
BACKGROUND = (24, 24, 32)
SPECIALS = ["<pad>", "<unk>", "<null>"]  # <pad> = 0; "<null>" alone is the caption dropped for guidance
MAX_TOKENS = {1: 8, 2: 20}  # caption length by --max-objects: the longest captions have 8 and 17 words
DEFECT_NAMES = ["clean", "misaligned", "noise", "blur", "watermark", "duplicate"]
# Fraction of training rows per defect: "default" (40% defective) trains worse than its clean part (docs/RESULTS.md)
DEFECT_MIXES = {"default": {"misaligned": 0.15, "noise": 0.08, "blur": 0.07, "watermark": 0.05, "duplicate": 0.05},
                "none": {},
                "heavy": {"misaligned": 0.25, "noise": 0.15, "blur": 0.10, "watermark": 0.05, "duplicate": 0.05}}


# ----------------------------------------------------------------------------------------------------------------
# Scenes, their captions, and the defects

def words(caption):
    return caption.lower().replace(",", " ").replace(".", " ").split()


def tokenize(captions, vocab, length):
    """Captions -> int64 [N, length], 0-padded, cut at `length`; unknown words (and written-out specials) -> <unk>."""
    index = {w: i for i, w in enumerate(vocab) if w not in SPECIALS}
    out = torch.zeros(len(captions), length, dtype=torch.int64)
    for r, c in enumerate(captions):
        ids = [index.get(w, 1) for w in words(c)][:length] or [1]
        out[r, :len(ids)] = torch.tensor(ids)
    return out


def shapes_vocab():
    """A fixed vocabulary for the shapes set, so that it does not depend on which scenes were drawn."""
    cell_words = {w for c in CELLS for w in c.split()}
    return SPECIALS + sorted(set("a at the and".split() + list(SCALES) + list(COLOURS) + SHAPES) | cell_words)


def describe(obj):
    shape, colour, scale, cell = obj
    return f"a {list(SCALES)[scale]} {list(COLOURS)[colour]} {SHAPES[shape]} at the {CELLS[cell]}"


def draw(objects, size, supersample=4):
    """objects: list of (shape, colour, scale, cell) ints -> uint8 array [3, size, size]. Drawn 4x larger and
    box-filtered down, so that 16x16 shapes stay recognisable."""
    img = Image.new("RGB", (size * supersample, size * supersample), BACKGROUND)
    pen, cell_w = ImageDraw.Draw(img), size * supersample / 3
    for shape, colour, scale, cell in objects:
        cx, cy = (cell % 3 + 0.5) * cell_w, (cell // 3 + 0.5) * cell_w
        r, fill, name = list(SCALES.values())[scale] * cell_w, list(COLOURS.values())[colour], SHAPES[shape]
        if name == "circle":
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif name == "square":
            pen.rectangle([cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r], fill=fill)
        elif name == "triangle":
            pen.polygon([(cx, cy - r), (cx + r, cy + 0.85 * r), (cx - r, cy + 0.85 * r)], fill=fill)
        else:  # diamond
            pen.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.uint8).transpose(2, 0, 1)


def random_scene(rng, max_objects=2):
    """One to `max_objects` (1 or 2) objects in distinct cells: list of (shape, colour, scale, cell)."""
    cells = rng.choice(9, size=rng.integers(1, max_objects + 1), replace=False)
    return [(int(rng.integers(4)), int(rng.integers(6)), int(rng.integers(2)), int(c)) for c in cells]


def generate(n, size, rng, mix, max_objects=2):
    """n rows: images uint8 [n,3,H,W], captions, defect [n], objects int64 [n,2,4] (-1 = no second object)."""
    scenes = [random_scene(rng, max_objects) for _ in range(n)]
    images = np.stack([draw(s, size) for s in scenes])
    captions = [" and ".join(describe(o) for o in s) for s in scenes]
    objects = np.full((n, 2, 4), -1, dtype=np.int64)
    for i, s in enumerate(scenes):
        objects[i, :len(s)] = s
    defect, order, start = np.zeros(n, dtype=np.int64), rng.permutation(n), 0
    for k, name in enumerate(DEFECT_NAMES[1:], 1):  # each defect on a disjoint random set of rows, in this order
        count = int(round(mix.get(name, 0.0) * n))
        defect[order[start:start + count]] = k
        start += count
    rows = {name: np.flatnonzero(defect == k) for k, name in enumerate(DEFECT_NAMES)}
    # misaligned: shuffle the chosen rows and pass each one's caption to the next; a row that would still get its
    # own caption (a lone misaligned row, or two identical scenes) gets a fresh random scene's caption instead
    r = rng.permutation(rows["misaligned"])
    own = [captions[i] for i in r]
    for i, c in zip(r, own[-1:] + own[:-1]):
        while c == captions[i]:
            c = " and ".join(describe(o) for o in random_scene(rng, max_objects))
        captions[i] = c
    r = rows["noise"]  # noise: 30% image, 70% uniform noise
    noise = rng.integers(0, 256, size=(len(r), 3, size, size))
    images[r] = (0.3 * images[r] + 0.7 * noise).round().astype(np.uint8)
    for i in rows["blur"]:  # blur: down-sample 4x (box) and up-sample (bilinear)
        small = Image.fromarray(images[i].transpose(1, 2, 0)).resize((size // 4, size // 4), Image.BOX)
        images[i] = np.asarray(small.resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
    # watermark: a bright framed stamp with a diagonal, blended at 70% over the bottom-right corner
    stamp, w, width = Image.new("L", (size, size), 0), size // 3, max(1, size // 16)
    ImageDraw.Draw(stamp).rectangle([size - w, size - w, size - 1, size - 1], outline=255, width=width)
    ImageDraw.Draw(stamp).line([size - w, size - 1, size - 1, size - w], fill=255, width=width)
    alpha = 0.7 * np.asarray(stamp, dtype=np.float64)[None] / 255.0
    for i in rows["watermark"]:
        images[i] = ((1 - alpha) * images[i] + alpha * 250).round().astype(np.uint8)
    plain = [(0, 0), (1, 2), (0, 3), (1, 5), (3, 1)]  # duplicate: five plain (shape, colour), large, in the centre
    for i in rows["duplicate"]:
        shape, colour = plain[int(rng.integers(len(plain)))]
        objects[i] = [(shape, colour, 1, 4), (-1, -1, -1, -1)]
        images[i] = draw([(shape, colour, 1, 4)], size)
        captions[i] = f"a {list(COLOURS)[colour]} {SHAPES[shape]}"
    return torch.from_numpy(images), captions, torch.from_numpy(defect), torch.from_numpy(objects)


def make_split(n, size, rng, mix, meta):
    """One generated split in the .pt format, captions padded no longer than the grammar needs (shorter is faster)."""
    images, captions, defect, objects = generate(n, size, rng, mix, meta.get("max_objects", 2))
    vocab = shapes_vocab()
    return {"images": images, "tokens": tokenize(captions, vocab, MAX_TOKENS[meta.get("max_objects", 2)]),
            "captions": captions, "vocab": vocab, "defect": defect, "defect_names": DEFECT_NAMES, "objects": objects,
            "label_names": {"shape": SHAPES, "colour": list(COLOURS), "size": list(SCALES), "cell": CELLS},
            "meta": meta}


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: what every stage shares (one-line errors, atomic writes, the loader), the importers, grids, the CLI

class DataError(ValueError):
    """A bad input file or flag; scripts print it as one line and exit with code 2."""


def fail(msg):
    """Print one clear line and exit 2 (bad input never gets a traceback)."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def arg_error(msg):
    """argparse's own errors as the same one line (every script sets `p.error = data.arg_error`)."""
    fail(f"{msg} (see --help)")


def finite(text):
    """argparse type of every float flag: NaN and infinities are refused like any other typo."""
    with contextlib.suppress(ValueError):
        if np.isfinite(x := float(text)):
            return x
    raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")


def check_out(path, folder=True, flag="--out"):
    """Before any work: the output folder (folder=True) or file can be written. Creates nothing that stays."""
    if not folder and (os.path.isdir(path) or str(path).endswith(("/", os.sep))):
        raise DataError(f"{path}: is a folder; {flag} needs a file name")
    where = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(where):  # the nearest folder on the path that exists
        where = os.path.dirname(where)
    if not os.path.isdir(where):
        raise DataError(f"{path}: {where} is a file, not a folder; choose another {flag}")
    try:
        tempfile.TemporaryFile(dir=where).close()  # a probe file, made and gone at once
    except OSError as e:
        raise DataError(f"{path}: cannot write in {where} ({e.strerror}); choose another {flag}") from None


def atomic_save(obj, path):
    """Write a temporary file of a name of its own beside `path`, then os.replace: a killed run leaves no half file."""
    path = str(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, cannot write a file there")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    try:
        with open(tmp, "xb") as f:
            if path.endswith(".npy"):
                np.save(f, obj)
            elif path.endswith((".json", ".csv", ".md")):
                f.write((obj if isinstance(obj, str) else json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
            elif path.endswith(".png"):
                obj.save(f, format="PNG")
            else:
                torch.save(obj, f)
        os.replace(tmp, path)
    finally:  # a failed write leaves no temporary file (after os.replace there is none)
        with contextlib.suppress(OSError):
            os.remove(tmp)


def fingerprint(*parts):
    """A short hash of tensors (dtype, shape, bytes) and lists of words: a resumed run goes on only with its data."""
    h = hashlib.sha256()
    for x in parts:
        h.update(f"{x.dtype}{tuple(x.shape)}".encode() + x.contiguous().numpy().tobytes() if torch.is_tensor(x)
                 else "\n".join(map(str, x)).encode() + b"\0")
    return h.hexdigest()[:16]


def pick_device(name):
    """--device auto|cpu|cuda: auto picks CUDA when present."""
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def uses_bf16(device, precision="auto"):
    """--precision -> bf16 products in training? auto: on CUDA, and on CPUs with AVX512-BF16 or AMX (1.4x faster)."""
    if precision != "auto" or device.type == "cuda":
        return precision != "fp32"
    flags = pathlib.Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""  # Linux only
    return " avx512_bf16" in flags or " amx_bf16" in flags


def load_pt(path, what="file"):
    """torch.load with weights_only=True (files are data, never code), turning every failure into a DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holds code
        raise DataError(f"{path}: not a readable .pt {what} ({type(e).__name__}); re-create it") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in this {what}, found {type(obj).__name__}")
    return obj


def load_dataset(path, split="train"):
    """Load and validate one split: `path` is a data folder (reads path/<split>.pt) or a .pt file itself."""
    file = os.path.join(path, f"{split}.pt") if os.path.isdir(path) else path
    if not os.path.exists(path):
        raise DataError(f"{path}: no such dataset file" if path.endswith(".pt") else
                        f"{path}: no such data folder; make one with `python data.py --out {path}`")
    d = load_pt(file, "dataset")
    missing = [k for k in ["images", "tokens", "captions", "vocab", "defect", "defect_names", "meta"] if k not in d]
    if missing:
        raise DataError(f"{file}: not a dataset, missing keys {missing}; re-create it with data.py")
    for k, dtype in [("images", torch.uint8), ("tokens", torch.int64), ("defect", torch.int64)]:
        if not torch.is_tensor(d[k]) or d[k].dtype != dtype:
            raise DataError(f"{file}: '{k}' must be a {dtype} tensor; re-create it with data.py")
    images, tokens, n = d["images"], d["tokens"], len(d["images"])
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or n == 0:
        raise DataError(f"{file}: 'images' must be [N,3,H,H] with N > 0, found {list(images.shape)}")
    if tokens.ndim != 2 or len(tokens) != n or len(d["defect"]) != n or len(d["captions"]) != n:
        raise DataError(f"{file}: images, tokens, captions and defect must have one row per sample ({n})")
    if d["vocab"][:3] != SPECIALS or tokens.min() < 0 or tokens.max() >= len(d["vocab"]):
        raise DataError(f"{file}: the vocabulary must start with {SPECIALS} and hold every token; re-create it")
    return d


def load_splits(path, *splits):
    """Several splits of one data folder, checked to share image size, vocabulary and caption length."""
    out = [load_dataset(path, s) for s in splits]
    for s, d in zip(splits[1:], out[1:]):
        if (d["images"].shape[1:] != out[0]["images"].shape[1:] or list(d["vocab"]) != list(out[0]["vocab"])
                or d["tokens"].shape[1] != out[0]["tokens"].shape[1]):
            raise DataError(f"{path}: {s}.pt and {splits[0]}.pt differ in image size, vocabulary or caption length; "
                            "re-create the folder with data.py")
    return out


def to_float(images):
    """uint8 [N,3,H,W] in 0..255 -> float [N,3,H,W] in [-1, 1], the range the diffusion models work in."""
    return images.float().div(127.5).sub(1.0)


def null_tokens(n, length):
    """The null caption (a lone <null> token) for classifier-free guidance: int64 [n, length]."""
    t = torch.zeros(n, length, dtype=torch.int64)
    t[:, 0] = SPECIALS.index("<null>")
    return t


def square(img, size):
    """Resize the short side to `size` and centre-crop: PIL image -> uint8 [3, size, size]."""
    img = img.convert("RGB")
    s = size / min(img.size)
    img = img.resize((max(size, round(img.width * s)), max(size, round(img.height * s))), Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)


def read_folder(folder, size):
    """DIR/captions.jsonl, one {"image": "rel/path.png", "caption": "...", "defect": 0?} per line (UTF-8); every image
    path is relative and stays inside DIR. -> images uint8 [N,3,size,size], captions, defect int64 [N]."""
    index = os.path.join(folder, "captions.jsonl")
    if not os.path.isfile(index):
        raise DataError(f"{index}: not found; --from-folder needs DIR/captions.jsonl")
    rows = []
    with open(index, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{index}:{lineno}"
            try:
                if not (line := raw.decode("utf-8")).strip():
                    continue
                row = json.loads(line)
                rel, caption, d = row["image"], row["caption"], row.get("defect", 0)
            except (ValueError, KeyError, TypeError):  # not UTF-8, not JSON, not an object with both keys
                raise DataError(f"{where}: expected a UTF-8 JSON line {{\"image\": ..., \"caption\": ...}}") from None
            norm = os.path.normpath(rel) if isinstance(rel, str) and rel.strip() else ""
            if not norm or os.path.isabs(norm) or norm.split(os.sep)[0] == os.pardir or "\0" in norm:
                raise DataError(f"{where}: \"image\" must be a relative path inside {folder}, found {rel!r:.60}")
            if not isinstance(caption, str) or type(d) is not int or not 0 <= d < 1000:  # type(): JSON true is no int
                raise DataError(f"{where}: \"caption\" must be a string, \"defect\" (if given) an integer in 0..999")
            try:
                with Image.open(os.path.join(folder, norm)) as img:
                    rows.append((square(img, size), caption, d))
            except Exception:  # missing, not an image, truncated, a decompression bomb: the file is the problem
                raise DataError(f"{where}: cannot read image {norm}") from None
    if len(rows) < 3:
        raise DataError(f"{index}: needs at least 3 images (train, val and test), found {len(rows)}")
    images, captions, defect = zip(*rows)
    return np.stack(images), list(captions), np.array(defect, dtype=np.int64)


def split_imported(rows, rng, meta, n_val, n_test, curated=None):
    """Imported (images, captions, defect) -> three splits, one vocabulary. Without `curated`, val and test are clean
    rows of one shuffle; with it (--val-from's rows), train is every row, test and val are shuffled curated rows."""
    if curated is None:
        order = rng.permutation(len(rows[0]))
        n_val, n_test = min(n_val, max(1, len(order) // 10)), min(n_test, max(1, len(order) // 10))
        clean = order[rows[2][order] == 0]
        if len(clean) < n_val + n_test:
            raise DataError(f"only {len(clean)} clean rows (not marked \"defect\"); val and test need {n_val + n_test}")
        parts = {"val": (rows, clean[:n_val]), "test": (rows, clean[n_val:n_val + n_test]),
                 "train": (rows, np.setdiff1d(order, clean[:n_val + n_test]))}
    else:
        order, n_test = rng.permutation(len(curated[0])), min(n_test, len(curated[0]) // 2)
        parts = {"train": (rows, np.arange(len(rows[0]))), "val": (curated, order[n_test:n_test + n_val]),
                 "test": (curated, order[:n_test])}
    every = rows[1] + (curated[1] if curated else [])
    vocab = SPECIALS + sorted({w for c in every for w in words(c)} - set(SPECIALS))
    length, top = max(1, min(32, max(len(words(c)) for c in every))), int(rows[2].max())
    return {name: {"images": torch.from_numpy(im[r]), "tokens": tokenize([caps[i] for i in r], vocab, length),
                   "captions": [caps[i] for i in r], "vocab": vocab, "defect": torch.from_numpy(de[r]),
                   "defect_names": DEFECT_NAMES if top < len(DEFECT_NAMES) else [str(i) for i in range(top + 1)],
                   "meta": dict(meta, split=name)} for name, ((im, caps, de), r) in parts.items()}


def captioned_grid(cells, captions, path, cols=4, scale=4, colours=None, footer=None, labels=None, cell_w=288):
    """The one writer of picture grids: cell i, uint8 [3,H,W] images stacked top to bottom, is captioned in two lines
    (in colours[i] if given); `labels` name the stacks' rows in a left margin; `footer` is a grey line at the bottom."""
    size = max(96, cells[0][0].shape[-1] * scale)
    cell_h, left, n_rows = len(cells[0]) * size + 36, 130 if labels else 0, (len(cells) + cols - 1) // cols
    canvas = Image.new("RGB", (left + cols * cell_w, n_rows * cell_h + (14 if footer else 0)), "white")
    pen, chars = ImageDraw.Draw(canvas), (cell_w - 12) // 6  # the default font: ~6 px a letter
    for i, (stack, cap) in enumerate(zip(cells, captions)):
        x, y = left + (i % cols) * cell_w, (i // cols) * cell_h
        for j, img in enumerate(stack):
            if labels and i % cols == 0:
                pen.text((4, y + j * size + size // 2 - 6), labels[j], fill=(0, 0, 0))
            canvas.paste(Image.fromarray(img.permute(1, 2, 0).numpy()).resize((size, size), Image.NEAREST),
                         (x, y + j * size))
        colour = colours[i] if colours else (0, 0, 0)
        pen.text((x, y + len(stack) * size + 2), cap[:chars], fill=colour)
        pen.text((x, y + len(stack) * size + 14), cap[chars:2 * chars], fill=colour)
    if footer:
        pen.text((4, canvas.height - 12), footer, fill="gray")
    atomic_save(canvas, path)


def preview(d, path, n=24):
    """Samples of every defect type in turn, each with its label and caption (defective ones in red)."""
    by_type = [np.flatnonzero(d["defect"].numpy() == k) for k in range(len(d["defect_names"]))]
    picks = [r[j] for j in range(n) for r in by_type if j < len(r)][:n]
    labels = [d["defect_names"][int(d["defect"][i])] for i in picks]
    captioned_grid([[d["images"][i]] for i in picks], [f"[{l}] {d['captions'][i]}" for l, i in zip(labels, picks)],
                   path, colours=[(0, 0, 0) if l == "clean" else (200, 0, 0) for l in labels])


def main(argv=None):
    p = argparse.ArgumentParser(description="Make a dataset in the .pt format all stages read (train/val/test).")
    p.add_argument("--out", required=True, help="output folder, e.g. data/shapes")
    p.add_argument("--n-train", type=int, default=8000, help="training rows (generated set)")
    p.add_argument("--n-val", type=int, default=1000, help="clean validation rows (the meta-gradient's outer loss)")
    p.add_argument("--n-test", type=int, default=1000, help="clean test rows (evaluation prompts and references)")
    p.add_argument("--size", type=int, default=32, choices=SIZES, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="generator seed; train, val and test use disjoint streams")
    p.add_argument("--max-objects", type=int, default=2, choices=[1, 2], help="most objects a scene (1 is learnt fast)")
    p.add_argument("--defects", default="default", choices=list(DEFECT_MIXES), help="defect mix of the training split")
    p.add_argument("--from-folder", metavar="DIR", help="import DIR/captions.jsonl and its images instead (any "
                   "labelled set, CIFAR-10 for example: write its images as PNG files, one captions.jsonl line each)")
    p.add_argument("--val-from", metavar="VAL_DIR", help="with --from-folder: val and test from this curated folder")
    p.add_argument("--preview", action="store_true", help="also write OUT/preview.png: samples, captions, defects")
    p.error = arg_error
    a = p.parse_args(argv)
    if min(a.n_train, a.n_val, a.n_test) < 1:
        fail("--n-train, --n-val and --n-test must be at least 1")
    if a.val_from and not a.from_folder:
        fail("--val-from VAL_DIR goes with --from-folder DIR (a generated set's val is clean by construction)")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(a.seed).spawn(3)]  # train, val, test: disjoint
    meta = {"format_version": FORMAT_VERSION, "seed": a.seed, "size": a.size}
    try:
        check_out(a.out)
        if a.from_folder:
            rows, curated = read_folder(a.from_folder, a.size), read_folder(a.val_from, a.size) if a.val_from else None
            meta.update(source=os.path.abspath(a.from_folder), generator="folder",
                        val_source="curated" if a.val_from else "same rows")
            if curated and (len(curated[0]) < 2 or (curated[2] != 0).any()):
                raise DataError(f"{a.val_from}: a --val-from folder needs 2 or more rows, none marked \"defect\"")
            splits = split_imported(rows, rngs[0], meta, a.n_val, a.n_test, curated)
        else:
            meta.update(generator="shapes", defects=a.defects, mix=DEFECT_MIXES[a.defects], max_objects=a.max_objects)
            splits = {s: make_split(n, a.size, rng, meta["mix"] if s == "train" else {}, dict(meta, split=s))
                      for s, n, rng in zip(["train", "val", "test"], [a.n_train, a.n_val, a.n_test], rngs)}
    except DataError as e:
        fail(str(e))
    for name, d in splits.items():
        atomic_save(d, os.path.join(a.out, f"{name}.pt"))
    if a.from_folder and not a.val_from:
        print(f"note: val and test are drawn from the rows of {a.from_folder} (only rows marked \"defect\" kept out): "
              "if they are dirty, so is the rater's outer loss; pass --val-from CURATED_DIR")
    train = splits["train"]
    counts = ", ".join(f"{train['defect_names'][k]} {c}" for k, c in enumerate(np.bincount(train["defect"])) if c)
    print(f"train: {len(train['images'])} rows ({counts}); val: {len(splits['val']['images'])}; "
          f"test: {len(splits['test']['images'])}; images {a.size}x{a.size}; vocabulary {len(train['vocab'])} words")
    if a.preview:
        preview(train, os.path.join(a.out, "preview.png"))
    print(f"wrote {a.out}/train.pt, val.pt, test.pt" + (", preview.png" if a.preview else ""))


if __name__ == "__main__":
    main()
