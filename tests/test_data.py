"""Tests for data.py: the generated shapes set, its defects, the .pt format and its loader, and the importers.

Each test names the property it checks. The generated set comes from the session fixture `tiny_shapes`
(tests/conftest.py): 16x16 images, 400 train rows with the default defect mix, 40 val, 40 test, seed 0.
"""
import json
import os
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

import data


def load(folder, split):
    return torch.load(os.path.join(folder, f"{split}.pt"), weights_only=True)


def caption_from_objects(objects):
    """objects int64 [2,4] (-1 = no second object) -> the template caption data.py writes for a clean row."""
    return " and ".join(data.describe(tuple(o)) for o in objects.tolist() if o[0] >= 0)


def rows_of(d, name):
    return torch.nonzero(d["defect"] == data.DEFECT_NAMES.index(name)).flatten().tolist()


def high_frequency_energy(images):
    """Mean squared difference between neighbouring pixels: uint8 [N,3,H,W] -> float [N]."""
    x = images.float()
    return ((x[:, :, 1:] - x[:, :, :-1]) ** 2).mean((1, 2, 3)) + ((x[..., 1:] - x[..., :-1]) ** 2).mean((1, 2, 3))


def laplacian_variance(images):
    """Variance of the 4-neighbour Laplacian of the grey image, the usual sharpness score: [N,3,H,W] -> [N]."""
    g = images.float().mean(1)  # (N, H, W)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return lap.var((1, 2))


def run_cli_expecting_error(argv, capsys):
    """data.main(argv) must exit with code 2 and say why in exactly one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        data.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, f"expected one error line, got {err!r}"
    return err


# ----------------------------------------------------------------------------------------------------------------
# Reproducibility and the three splits

def test_same_seed_gives_identical_dataset_and_another_seed_a_different_one(tiny_shapes, tmp_path):
    args = ["--size", "16", "--n-train", "400", "--n-val", "40", "--n-test", "40"]
    data.main(["--out", str(tmp_path / "again"), *args])
    data.main(["--out", str(tmp_path / "seed1"), *args, "--seed", "1"])
    for split in ["train", "val", "test"]:
        a, b, c = load(tiny_shapes, split), load(tmp_path / "again", split), load(tmp_path / "seed1", split)
        for k in ["images", "tokens", "defect", "objects"]:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{split}.{k} differs for the same seed"
        assert a["captions"] == b["captions"] and a["meta"] == b["meta"]
        assert not torch.equal(a["images"], c["images"]) and a["captions"] != c["captions"]
        assert c["meta"]["seed"] == 1


def test_val_and_test_do_not_depend_on_the_size_of_train(tiny_shapes, tmp_path):
    # Disjoint random streams: drawing more or fewer training rows leaves val and test untouched.
    data.main(["--out", str(tmp_path), "--size", "16", "--n-train", "57", "--n-val", "40", "--n-test", "40"])
    for split in ["val", "test"]:
        assert torch.equal(load(tiny_shapes, split)["images"], load(tmp_path, split)["images"])
        assert load(tiny_shapes, split)["captions"] == load(tmp_path, split)["captions"]
    assert len(load(tmp_path, "train")["images"]) == 57


def test_every_generated_split_passes_the_loader_validation(tiny_shapes):
    for split, n in [("train", 400), ("val", 40), ("test", 40)]:
        d = data.load_dataset(tiny_shapes, split)
        assert d["images"].shape == (n, 3, 16, 16) and d["images"].dtype == torch.uint8
        assert d["objects"].shape == (n, 2, 4) and d["meta"]["split"] == split
        assert d["meta"]["format_version"] == data.FORMAT_VERSION and d["meta"]["size"] == 16
    # a .pt file path works as well as a folder
    assert torch.equal(data.load_dataset(os.path.join(tiny_shapes, "val.pt"))["images"], load(tiny_shapes, "val")["images"])


def test_val_and_test_are_clean_and_train_has_the_default_mix_exactly(tiny_shapes):
    for split in ["val", "test"]:
        assert (load(tiny_shapes, split)["defect"] == 0).all(), f"{split} must hold no defects"
    train = load(tiny_shapes, "train")
    n = len(train["images"])
    for name, rate in data.DEFECT_MIXES["default"].items():
        assert len(rows_of(train, name)) == round(rate * n), name
    assert len(rows_of(train, "clean")) == n - sum(round(r * n) for r in data.DEFECT_MIXES["default"].values())


def test_heavy_and_none_mixes_give_their_defect_counts(tmp_path):
    for mix in ["heavy", "none"]:
        data.main(["--out", str(tmp_path / mix), "--size", "16", "--n-train", "120", "--n-val", "3", "--n-test", "3",
                   "--defects", mix])
        d = load(tmp_path / mix, "train")
        for name in data.DEFECT_NAMES[1:]:
            assert len(rows_of(d, name)) == round(data.DEFECT_MIXES[mix].get(name, 0.0) * 120), (mix, name)


def test_val_and_test_images_are_not_copies_of_train_images(tiny_shapes):
    train, val, test = (load(tiny_shapes, s) for s in ["train", "val", "test"])
    train_images = {x.numpy().tobytes() for x in train["images"]}
    for name, d in [("val", val), ("test", test)]:
        hits = [i for i, x in enumerate(d["images"]) if x.numpy().tobytes() in train_images]
        # Chance collisions happen only for one-object scenes (432 of them); two-object scenes never coincide.
        assert all(d["objects"][i, 1, 0] == -1 for i in hits), f"{name} shares a two-object image with train"
        assert len(hits) < len(d["images"]) // 4, f"{name}: {len(hits)} of {len(d['images'])} images also in train"
    assert not torch.equal(val["images"], test["images"])
    assert not torch.equal(val["objects"], train["objects"][:len(val["objects"])])  # not the same stream


# ----------------------------------------------------------------------------------------------------------------
# What each defect does (and what it leaves alone)

def test_clean_rows_are_drawn_from_their_objects_and_captioned_from_them(tiny_shapes):
    for split in ["train", "val", "test"]:
        d = load(tiny_shapes, split)
        for i in rows_of(d, "clean"):
            assert d["captions"][i] == caption_from_objects(d["objects"][i])
            assert np.array_equal(d["images"][i].numpy(), data.draw(d["objects"][i][d["objects"][i][:, 0] >= 0].tolist(), 16))


def test_misaligned_rows_have_a_clean_image_but_a_caption_that_describes_something_else(tiny_shapes):
    d = load(tiny_shapes, "train")
    rows = rows_of(d, "misaligned")
    assert rows
    for i in rows:
        objects = d["objects"][i][d["objects"][i][:, 0] >= 0].tolist()
        assert np.array_equal(d["images"][i].numpy(), data.draw(objects, 16)), "the image itself must stay clean"
        assert d["captions"][i] != caption_from_objects(d["objects"][i])
    # the wrong captions are real template captions, taken from other rows
    described = {caption_from_objects(d["objects"][i]) for i in rows}
    assert {d["captions"][i] for i in rows} <= described


def test_image_defects_keep_the_caption_of_their_objects(tiny_shapes):
    d = load(tiny_shapes, "train")
    for name in ["noise", "blur", "watermark"]:
        for i in rows_of(d, name):
            assert d["captions"][i] == caption_from_objects(d["objects"][i]), name


def test_noise_rows_have_much_more_high_frequency_energy_than_clean_rows(tiny_shapes):
    d = load(tiny_shapes, "train")
    noise = high_frequency_energy(d["images"][rows_of(d, "noise")])
    clean = high_frequency_energy(d["images"][rows_of(d, "clean")])
    assert noise.min() > 3 * clean.median() and noise.min() > clean.max()


def test_blur_rows_are_less_sharp_than_clean_rows_and_than_their_own_unblurred_scene(tiny_shapes):
    d = load(tiny_shapes, "train")
    rows = rows_of(d, "blur")
    blur = laplacian_variance(d["images"][rows])
    assert blur.max() < laplacian_variance(d["images"][rows_of(d, "clean")]).min()
    unblurred = torch.stack([torch.tensor(data.draw(d["objects"][i][d["objects"][i][:, 0] >= 0].tolist(), 16))
                             for i in rows])
    assert (blur < laplacian_variance(unblurred)).all()


def test_watermark_rows_have_bright_pixels_in_the_bottom_right_corner_and_clean_rows_none(tiny_shapes):
    d = load(tiny_shapes, "train")
    bright = (d["images"] >= 170).all(1)  # (N, H, W): near-white; no shape colour has all three channels this high
    corner, rest = bright[:, 16 - 16 // 3:, 16 - 16 // 3:], bright.clone()
    rest[:, 16 - 16 // 3:, 16 - 16 // 3:] = False
    for i in rows_of(d, "watermark"):
        assert corner[i].sum() >= 5 and bright[i, -1, -1], f"row {i}: no stamp in the corner"
        assert not rest[i].any(), f"row {i}: bright pixels outside the corner"
    assert not bright[rows_of(d, "clean")].any()


def test_duplicate_rows_are_exact_copies_of_at_most_five_images_with_short_captions(tiny_shapes):
    d = load(tiny_shapes, "train")
    rows = rows_of(d, "duplicate")
    distinct = {d["images"][i].numpy().tobytes() for i in rows}
    assert 1 <= len(distinct) <= 5 and len(distinct) < len(rows), "duplicates must repeat a few images"
    for i in rows:
        shape, colour, scale, cell = d["objects"][i, 0].tolist()
        assert (d["objects"][i, 1] == -1).all() and (scale, cell) == (1, 4)  # one large object in the centre
        assert d["captions"][i] == f"a {list(data.COLOURS)[colour]} {data.SHAPES[shape]}"  # three words
    assert len({d["captions"][i] for i in rows}) == len(distinct)  # one caption per distinct image


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary and tokens

def test_vocabulary_starts_with_pad_unk_null_and_tokens_decode_to_the_caption_words(tiny_shapes):
    for split in ["train", "val"]:
        d = load(tiny_shapes, split)
        vocab = d["vocab"]
        assert vocab[:3] == ["<pad>", "<unk>", "<null>"] and vocab == data.shapes_vocab()
        assert d["tokens"].shape == (len(d["captions"]), data.MAX_TOKENS[2]) and d["tokens"].dtype == torch.int64
        for caption, row in zip(d["captions"], d["tokens"].tolist()):
            n = len(data.words(caption))
            assert [vocab[t] for t in row[:n]] == data.words(caption)  # no <unk>, nothing cut
            assert all(t == 0 for t in row[n:]), "padding must be 0"


def test_unknown_words_become_unk_and_long_captions_are_cut():
    vocab = data.SPECIALS + ["a", "red"]
    t = data.tokenize(["a red dog", "a a a a a", ""], vocab, 3)
    assert t.tolist() == [[3, 4, 1], [3, 3, 3], [1, 0, 0]]


def test_null_tokens_are_a_lone_null_then_padding():
    t = data.null_tokens(3, 5)
    assert t.dtype == torch.int64 and t.shape == (3, 5)
    assert t[:, 0].tolist() == [data.SPECIALS.index("<null>")] * 3 and data.SPECIALS[t[0, 0]] == "<null>"
    assert (t[:, 1:] == 0).all()


# ----------------------------------------------------------------------------------------------------------------
# The loader's validation: every bad file is a DataError that names the file

@pytest.fixture
def valid_split(tiny_shapes):
    return load(tiny_shapes, "val")


def test_load_dataset_names_a_missing_path(tmp_path):
    path = str(tmp_path / "nowhere")
    with pytest.raises(data.DataError, match=re.escape(path)):
        data.load_dataset(path)


def test_load_dataset_names_a_folder_without_the_split(tmp_path):
    with pytest.raises(data.DataError, match=re.escape(str(tmp_path / "train.pt"))):
        data.load_dataset(str(tmp_path))


def test_load_dataset_rejects_a_file_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\x01 this is not a zip or a pickle \xff" * 10)
    with pytest.raises(data.DataError, match=re.escape(str(path))):
        data.load_dataset(str(path))


def test_load_dataset_rejects_a_file_that_holds_no_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(data.DataError, match=re.escape(str(path))):
        data.load_dataset(str(path))


@pytest.mark.parametrize("break_it", [
    pytest.param(lambda d: d.pop("vocab"), id="missing-key"),
    pytest.param(lambda d: d.update(images=d["images"].float()), id="float-images"),
    pytest.param(lambda d: d.update(tokens=d["tokens"].int()), id="int32-tokens"),
    pytest.param(lambda d: d.update(captions=d["captions"][:-1]), id="fewer-captions"),
    pytest.param(lambda d: d.update(defect=d["defect"][:-2]), id="fewer-defects"),
    pytest.param(lambda d: d.update(images=d["images"][:, :, :, :8]), id="non-square-images"),
    pytest.param(lambda d: d.update(tokens=d["tokens"] + len(d["vocab"])), id="tokens-outside-vocab"),
    pytest.param(lambda d: d.update(vocab=d["vocab"][1:]), id="vocab-without-pad"),
])
def test_load_dataset_rejects_a_broken_dataset_and_names_the_file(valid_split, tmp_path, break_it):
    break_it(valid_split)
    path = tmp_path / "broken.pt"
    torch.save(valid_split, path)
    with pytest.raises(data.DataError, match=re.escape(str(path))):
        data.load_dataset(str(path))


# ----------------------------------------------------------------------------------------------------------------
# Bad command lines: exit code 2, one line on stderr, nothing written

def write_folder(folder, lines):
    os.makedirs(folder, exist_ok=True)
    Image.new("RGB", (20, 20), (10, 20, 30)).save(os.path.join(folder, "ok.png"))
    with open(os.path.join(folder, "captions.jsonl"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(folder)


def good(i):
    return json.dumps({"image": "ok.png", "caption": f"picture {i}"})


@pytest.mark.parametrize("case", ["size-20", "unknown-defects", "zero-rows", "missing-image", "empty-captions",
                                  "malformed-line", "line-without-caption", "no-captions-file"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    out = tmp_path / "out"
    src = tmp_path / "src"
    argv = {
        "size-20": ["--size", "20"],
        "unknown-defects": ["--defects", "sometimes"],
        "zero-rows": ["--n-train", "0"],
        "missing-image": ["--from-folder", write_folder(src, [good(0), good(1),
                                                               json.dumps({"image": "gone.png", "caption": "x"})])],
        "empty-captions": ["--from-folder", write_folder(src, [])],
        "malformed-line": ["--from-folder", write_folder(src, [good(0), '{"image": "ok.png", "caption"', good(2)])],
        "line-without-caption": ["--from-folder", write_folder(src, [good(0), good(1), '{"image": "ok.png"}'])],
        "no-captions-file": ["--from-folder", str(tmp_path)],
    }[case]
    err = run_cli_expecting_error(["--out", str(out), "--n-val", "1", "--n-test", "1", *argv], capsys)
    if case in ("missing-image", "malformed-line", "line-without-caption"):
        assert ":3:" in err, "the message must name the bad line"
    assert not (out / "train.pt").exists()


# ----------------------------------------------------------------------------------------------------------------
# --from-folder: images of any size, centre-cropped, with captions.jsonl

def thirds(w, h, vertical):
    """A w x h image cut in three equal bands red | green | blue (left to right, or top to bottom)."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    for k, colour in enumerate([(255, 0, 0), (0, 200, 0), (0, 0, 255)]):
        if vertical:
            a[k * h // 3:(k + 1) * h // 3] = colour
        else:
            a[:, k * w // 3:(k + 1) * w // 3] = colour
    return Image.fromarray(a)


@pytest.fixture
def image_folder(tmp_path):
    """12 PNGs of varied sizes (some in a subfolder), captions.jsonl; one row says "defect": 1."""
    folder = tmp_path / "photos"
    os.makedirs(folder / "sub")
    rng = np.random.default_rng(0)
    sizes = [(16, 16), (20, 30), (33, 17), (64, 40), (25, 25), (40, 64), (17, 33), (30, 20), (50, 50), (18, 24)]
    rows = []
    for i, (w, h) in enumerate(sizes):
        rel = f"sub/img{i}.png" if i % 2 else f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / rel)
        rows.append({"image": rel, "caption": f"A noisy Picture, number {i}."})
    thirds(48, 16, vertical=False).save(folder / "wide.png")
    thirds(16, 48, vertical=True).save(folder / "tall.png")
    rows.append({"image": "wide.png", "caption": "red green blue side by side"})
    rows.append({"image": "tall.png", "caption": "red green blue stacked", "defect": 1})
    with open(folder / "captions.jsonl", "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n\n")  # a trailing blank line is allowed
    return str(folder)


def all_rows(folder):
    """Every row of train, val and test: {caption: (image uint8 [3,H,W], tokens, defect, vocab)}."""
    out = {}
    for split in ["train", "val", "test"]:
        d = data.load_dataset(folder, split)
        for i, c in enumerate(d["captions"]):
            out[c] = (d["images"][i], d["tokens"][i], int(d["defect"][i]), d["vocab"])
    return out


def test_from_folder_imports_every_image_as_a_square_uint8_row(image_folder, tmp_path):
    out = str(tmp_path / "out")
    data.main(["--out", out, "--from-folder", image_folder, "--size", "16"])
    splits = [data.load_dataset(out, s) for s in ["train", "val", "test"]]
    for d in splits:
        assert d["images"].dtype == torch.uint8 and d["images"].shape[1:] == (3, 16, 16)
    assert sum(len(d["images"]) for d in splits) == 12 and all(len(d["images"]) >= 1 for d in splits)
    rows = all_rows(out)
    assert len(rows) == 12, "every caption appears exactly once across the splits"
    caption_words = {w for c in rows for w in data.words(c)}
    for image, tokens, defect, vocab in rows.values():
        assert vocab[:3] == data.SPECIALS and set(vocab[3:]) == caption_words
    for caption, (image, tokens, defect, vocab) in rows.items():
        assert [vocab[t] for t in tokens.tolist() if t != 0] == data.words(caption)
        assert defect == (1 if caption == "red green blue stacked" else 0)


def test_from_folder_centre_crops_the_long_side(image_folder, tmp_path):
    out = str(tmp_path / "out")
    data.main(["--out", out, "--from-folder", image_folder, "--size", "16"])
    rows = all_rows(out)
    green = torch.tensor([0, 200, 0], dtype=torch.uint8)[:, None, None].expand(3, 16, 16)
    assert torch.equal(rows["red green blue side by side"][0], green)  # 48x16: the middle third
    assert torch.equal(rows["red green blue stacked"][0], green)  # 16x48: the middle third


# ----------------------------------------------------------------------------------------------------------------
# --from-cifar10: a fake CIFAR-10 folder in the real pickle format

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def cifar_root(tmp_path):
    """ROOT/cifar-10-batches-py with batches.meta, data_batch_1 (20 images) and test_batch (10 images).

    Rows are uint8 [n, 3072]: the 1024 red values, then green, then blue, each row-major 32x32. The first byte of
    image k is k, so a test can find it again after the shuffle."""
    base = tmp_path / "cifar" / "cifar-10-batches-py"
    os.makedirs(base)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (30, 3072), dtype=np.uint8)
    raw[:, 0] = np.arange(30)
    labels = [int(x) for x in rng.integers(0, 10, 30)]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}, f, protocol=2)
    for name, rows in [("data_batch_1", slice(0, 20)), ("test_batch", slice(20, 30))]:
        with open(base / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels[rows], b"data": raw[rows],
                         b"filenames": [b"x.png"] * len(labels[rows])}, f, protocol=2)
    return str(tmp_path / "cifar"), raw, labels


def test_from_cifar10_captions_match_labels_and_pixels_keep_the_channel_first_layout(cifar_root, tmp_path):
    root, raw, labels = cifar_root
    out = str(tmp_path / "out")
    data.main(["--out", out, "--from-cifar10", root, "--size", "32"])
    seen = []
    for split in ["train", "val", "test"]:
        d = data.load_dataset(out, split)
        assert (d["defect"] == 0).all()
        for image, caption in zip(d["images"], d["captions"]):
            k = int(image[0, 0, 0])
            seen.append(k)
            assert caption == f"a photo of a {CIFAR_NAMES[labels[k]]}"
            # byte 1024 + 32*5 + 7 of the raw row is the green value at row 5, column 7
            assert image[1, 5, 7] == raw[k, 1024 + 32 * 5 + 7]
            assert np.array_equal(image.numpy(), raw[k].reshape(3, 32, 32))
    assert sorted(seen) == list(range(30)), "every image once, across the three splits"


def test_from_cifar10_resizes_to_the_asked_size(cifar_root, tmp_path):
    data.main(["--out", str(tmp_path / "out"), "--from-cifar10", cifar_root[0], "--size", "16"])
    assert data.load_dataset(str(tmp_path / "out"))["images"].shape[1:] == (3, 16, 16)


def test_from_cifar10_without_the_batches_folder_exits_2(tmp_path, capsys):
    run_cli_expecting_error(["--out", str(tmp_path / "out"), "--from-cifar10", str(tmp_path)], capsys)
    assert not (tmp_path / "out" / "train.pt").exists()


# ----------------------------------------------------------------------------------------------------------------
# --preview and the atomic writer

def test_preview_writes_a_png_larger_than_the_bare_image_grid(tmp_path):
    out = tmp_path / "out"
    data.main(["--out", str(out), "--size", "16", "--n-train", "60", "--n-val", "2", "--n-test", "2", "--preview"])
    with Image.open(out / "preview.png") as img:
        assert img.format == "PNG"
        w, h = img.size
        img = img.convert("RGB")
        assert w > 4 * 16 and h > 6 * 16, "24 samples in 4 columns, enlarged and with captions below"
        assert len(img.getcolors(maxcolors=1 << 20)) > 10, "the preview is not blank"


def test_atomic_save_writes_pt_npy_and_json_and_leaves_no_tmp_file(tmp_path):
    obj = {"x": torch.arange(5), "names": ["a", "b"]}
    scores = np.linspace(0, 1, 7, dtype=np.float32)
    metrics = {"fid": 12.5, "n_samples": 100}
    data.atomic_save(obj, tmp_path / "sub" / "a.pt")  # the folder is created
    data.atomic_save(scores, tmp_path / "scores.npy")
    data.atomic_save(metrics, str(tmp_path / "metrics.json"))
    data.atomic_save({"fid": 1.0}, tmp_path / "old.json")
    data.atomic_save(metrics, tmp_path / "old.json")  # overwrites in place
    loaded = torch.load(tmp_path / "sub" / "a.pt", weights_only=True)
    assert torch.equal(loaded["x"], obj["x"]) and loaded["names"] == ["a", "b"]
    back = np.load(tmp_path / "scores.npy")
    assert back.dtype == np.float32 and np.array_equal(back, scores)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert json.loads((tmp_path / "old.json").read_text()) == metrics
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "old.json", "scores.npy", "sub"]
    assert os.listdir(tmp_path / "sub") == ["a.pt"]


@pytest.mark.parametrize("n", range(4, 12))
def test_every_misaligned_row_has_another_caption_even_when_it_is_alone(n):
    imgs, caps, defect, objects = data.generate(n, 16, np.random.default_rng(n), data.DEFECT_MIXES["default"])
    rows = np.flatnonzero(defect.numpy() == data.DEFECT_NAMES.index("misaligned"))
    assert len(rows) >= 1
    for i in rows:
        assert caps[i] != caption_from_objects(objects[i])


def test_folder_import_keeps_defective_rows_out_of_val_and_test(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open(folder / "captions.jsonl", "w") as f:
        for i in range(20):
            Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(folder / f"{i}.png")
            f.write(json.dumps({"image": f"{i}.png", "caption": f"red {i}", "defect": int(i % 2 == 0)}) + "\n")
    out = tmp_path / "out"
    data.main(["--out", str(out), "--from-folder", str(folder), "--size", "16", "--n-val", "2", "--n-test", "2"])
    for split in ("val", "test"):
        assert int(load(str(out), split)["defect"].sum()) == 0
    assert int(load(str(out), "train")["defect"].sum()) == 10


# ----------------------------------------------------------------------------------------------------------------
# --val-from: val and test from a small curated folder (issue 16)

def caption_folder(folder, captions, defect=None, shade=0):
    """PNG images (a different colour each) and captions.jsonl; `defect` marks rows when given."""
    folder.mkdir()
    with open(folder / "captions.jsonl", "w") as f:
        for i, c in enumerate(captions):
            Image.new("RGB", (20, 20), (shade + 3 * i, 100, 50)).save(folder / f"{i}.png")
            row = {"image": f"{i}.png", "caption": c, **({"defect": defect[i]} if defect else {})}
            f.write(json.dumps(row) + "\n")
    return str(folder)


def test_val_from_takes_val_and_test_from_the_curated_folder_and_train_is_every_imported_row(tmp_path, capsys):
    dirty = caption_folder(tmp_path / "dirty", [f"dirty row {i}" for i in range(30)])
    curated = caption_folder(tmp_path / "curated", [f"clean pick {i}" for i in range(9)], shade=120)
    out = str(tmp_path / "out")
    data.main(["--out", out, "--from-folder", dirty, "--val-from", curated, "--size", "16", "--n-val", "6"])
    assert "note:" not in capsys.readouterr().out
    train, val, test = (data.load_dataset(out, s) for s in ["train", "val", "test"])
    assert train["captions"] == [f"dirty row {i}" for i in range(30)]  # all of them, in file order
    assert len(test["captions"]) == 4 and len(val["captions"]) == 5  # test: half of 9; val: the rest (<= --n-val)
    assert sorted(val["captions"] + test["captions"]) == sorted(f"clean pick {i}" for i in range(9))
    assert train["vocab"] == val["vocab"] == test["vocab"] and {"dirty", "clean", "pick"} <= set(train["vocab"])
    for d in (val, test):  # the images came with their captions
        for img, cap in zip(d["images"], d["captions"]):
            assert int(img[0, 0, 0]) == 120 + 3 * int(cap.split()[-1])
    assert val["meta"]["val_source"] == "curated" and train["meta"]["val_source"] == "curated"


def test_an_import_without_a_curated_val_says_so_in_one_line(tmp_path, capsys):
    dirty = caption_folder(tmp_path / "dirty", [f"row {i}" for i in range(30)])
    data.main(["--out", str(tmp_path / "out"), "--from-folder", dirty, "--size", "16"])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--val-from" in notes[0]
    assert data.load_dataset(str(tmp_path / "out"), "val")["meta"]["val_source"] == "same rows"


@pytest.mark.parametrize("case", ["marked", "without_folder", "too_small"])
def test_a_bad_curated_folder_exits_2_with_one_line(tmp_path, capsys, case):
    dirty = caption_folder(tmp_path / "dirty", [f"row {i}" for i in range(30)])
    n = 1 if case == "too_small" else 6
    curated = caption_folder(tmp_path / "curated", [f"pick {i}" for i in range(n)],
                             defect=[0, 1, 0, 0, 0, 0] if case == "marked" else None)
    source = [] if case == "without_folder" else ["--from-folder", dirty]
    err = run_cli_expecting_error(["--out", str(tmp_path / "out"), *source, "--val-from", curated, "--size", "16"],
                                  capsys)
    assert "--val-from" in err or "curated" in err
    assert not (tmp_path / "out" / "train.pt").exists()
