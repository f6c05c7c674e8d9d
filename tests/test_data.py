"""Tests for data.py's generated shapes set: reproducibility, the three splits, what each defect does, the
vocabulary and tokens, the preview and the atomic writer. (The loader's checks, bad command lines and the importers
of real images are in tests/test_import.py.)

Each test names the property it checks. The generated set comes from the session fixture `tiny_shapes`
(tests/conftest.py): 16x16 images, 400 train rows with the default defect mix, 40 val, 40 test, seed 0.
"""
import json
import os

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


@pytest.mark.parametrize("n", range(4, 12))
def test_every_misaligned_row_has_another_caption_even_when_it_is_alone(n):
    imgs, caps, defect, objects = data.generate(n, 16, np.random.default_rng(n), data.DEFECT_MIXES["default"])
    rows = np.flatnonzero(defect.numpy() == data.DEFECT_NAMES.index("misaligned"))
    assert len(rows) >= 1
    for i in rows:
        assert caps[i] != caption_from_objects(objects[i])


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
