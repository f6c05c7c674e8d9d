"""Tests for data.py's inputs: the loader's validation, bad command lines, and the importers of real images
(--from-folder, --val-from). (The generated shapes set is tested in tests/test_data.py.)

Each test names the property it checks; every bad input must be a DataError, or one line on stderr and exit 2.
"""
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import data


def load(folder, split):
    return torch.load(os.path.join(folder, f"{split}.pt"), weights_only=True)


def run_cli_expecting_error(argv, capsys):
    """data.main(argv) must exit with code 2 and say why in exactly one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        data.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, f"expected one error line, got {err!r}"
    return err


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
    pytest.param(lambda d: d.update(images=d["images"][:0], tokens=d["tokens"][:0], defect=d["defect"][:0],
                                    captions=[]), id="no-rows"),
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
                                  "malformed-line", "line-without-caption", "defect-true", "no-captions-file"])
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
        "defect-true": ["--from-folder", write_folder(src, [good(0), good(1), json.dumps(
            {"image": "ok.png", "caption": "x", "defect": True})])],  # JSON true is not a defect number
        "no-captions-file": ["--from-folder", str(tmp_path)],
    }[case]
    err = run_cli_expecting_error(["--out", str(out), "--n-val", "1", "--n-test", "1", *argv], capsys)
    if case in ("missing-image", "malformed-line", "line-without-caption", "defect-true"):
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
