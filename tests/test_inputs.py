"""Bad input, the whole way (issue 13): the shared helpers (one-line argparse errors, finite floats, the output check,
the atomic writer), and a representative subset of tests/bad_inputs.py's battery."""
import argparse
import os

import pytest
import torch

import bad_inputs
import data

SCRIPTS = ["data", "proxy", "metagrad", "rater", "prune", "train_t2i", "evaluate", "toy2d", "ablate"]

pytestmark = pytest.mark.usefixtures("one_thread")


REQUIRED = {"data": ["--out"], "proxy": ["--data", "--out"], "metagrad": ["--data", "--proxy", "--out"],
            "rater": ["--data", "--rater", "--out"], "prune": ["--out"], "train_t2i": ["--data", "--out"],
            "evaluate": ["--data", "--model", "--out"], "toy2d": ["--out"], "ablate": []}


@pytest.mark.parametrize("script", SCRIPTS)
def test_argparse_errors_are_one_line_naming_the_flag_and_pointing_to_help(script, capsys):
    main = __import__(script).main
    given = [x for flag in REQUIRED[script] for x in (flag, "x")]
    for argv, flag in [(given + ["--bogus-flag"], "--bogus-flag"), (["--device"], "--device"),
                       (["--out"] if script != "ablate" else ["--runs"], "--out" if script != "ablate" else "--runs"),
                       ([], REQUIRED[script][-1] if REQUIRED[script] else None)]:
        if flag is None or (flag == "--device" and script == "data"):
            continue
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert flag in err and "(see --help)" in err and "usage:" not in err


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999", "fast", ""])
def test_float_flags_refuse_what_is_not_a_finite_number(text):
    with pytest.raises(argparse.ArgumentTypeError):
        data.finite(text)


def test_float_flags_keep_finite_numbers_exactly():
    assert [data.finite(t) for t in ["1e-3", "-2", "0", "3.5"]] == [1e-3, -2.0, 0.0, 3.5]


def test_check_out_refuses_a_path_under_a_file_or_a_folder_for_a_file_and_creates_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    for path, folder in [(tmp_path / "f" / "run", True), (tmp_path / "f", True), (tmp_path / "d", False),
                         (tmp_path / "f" / "m.json", False)]:
        with pytest.raises(data.DataError):
            data.check_out(path, folder)
    data.check_out(tmp_path / "new" / "deeper", True)  # fine, and nothing made
    data.check_out(tmp_path / "new" / "m.json", False)
    assert sorted(os.listdir(tmp_path)) == ["d", "f"]


def test_atomic_save_uses_a_temporary_name_of_its_own_and_removes_it_when_the_write_fails(tmp_path, monkeypatch):
    names, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (names.append(a), replace(a, b)))
    data.atomic_save({"a": 1}, tmp_path / "m.json")
    data.atomic_save({"a": 2}, tmp_path / "m.json")
    assert len(set(names)) == 2 and all(os.path.dirname(n) == str(tmp_path) for n in names)  # two writers, two names

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot be saved")
    with pytest.raises(RuntimeError):
        data.atomic_save({"x": Unsaveable()}, tmp_path / "m.pt")
    assert sorted(os.listdir(tmp_path)) == ["m.json"]  # no temporary file left, no half file
    (tmp_path / "adir").mkdir()
    with pytest.raises(data.DataError):
        data.atomic_save({"a": 1}, tmp_path / "adir")
    assert os.listdir(tmp_path / "adir") == []


def test_special_tokens_written_in_a_caption_are_read_as_unknown_words():
    vocab = data.SPECIALS + ["red"]
    tokens = data.tokenize(["<pad>", "<null>", "<unk> red", ""], vocab, 3)
    assert tokens.tolist() == [[1, 0, 0], [1, 0, 0], [1, 3, 0], [1, 0, 0]]  # <unk> = 1, never all padding


# ----------------------------------------------------------------------------------------------------------------
# The battery, a representative subset: every script; flags, files, folders, resumes, outputs, the lock

SUBSET = ["data: --out under a file", "data: folder: image_null",
          "data: folder: parent", "data: folder: absolute", "data: folder: utf8", "data: folder: nested_parent",
          "data: folder: captions <pad>", "proxy: steps 0", "proxy: lr nan", "proxy: ckpt-every 0",
          "proxy: corrupt val.pt", "proxy: 32px train beside 16px val", "proxy: --out is a file",
          "proxy: resume: another seed", "proxy: val split of 8 rows", "metagrad: lr nan", "metagrad: eta 0",
          "metagrad: proxy holds code", "metagrad: primary warmed on train", "metagrad: resume: other data",
          "rater: out a folder named .npy", "rater: rater for 16px, data 32px", "prune: keep nan",
          "prune: score loss, proxy of another vocabulary", "prune: --out under a file", "train_t2i: steps 0",
          "train_t2i: batch-size 0", "train_t2i: lr 0", "train_t2i: lr nan", "train_t2i: resume: another subset",
          "train_t2i: resume: another EMA", "train_t2i: data with captions <pad>", "train_t2i: lr 1e30",
          "evaluate: cfg nan", "evaluate: guidance nan", "evaluate: model of another vocabulary",
          "evaluate: model of shorter captions", "evaluate: out a folder", "evaluate: --out under a file",
          "toy2d: lr nan", "toy2d: --out under a file", "ablate: workers 0", "ablate: runs under a file",
          "ablate: runs folder locked by a running grid"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the battery forks its cases")
def test_a_representative_subset_of_the_battery_is_handled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    F = bad_inputs.build(str(tmp_path))
    chosen = [c for c in bad_inputs.cases(F) if any(c.name.startswith(s) for s in SUBSET)]
    assert len(chosen) == len(SUBSET), sorted(set(SUBSET) - {s for s in SUBSET for c in chosen if c.name.startswith(s)})
    failed = {}
    for case in chosen:
        ok, why = bad_inputs.run_case(case, timeout=120)
        if not ok:
            failed[case.name] = why
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())
    assert torch.get_num_threads() == 1  # the cases ran in children, this process is untouched
