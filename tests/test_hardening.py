"""Inputs a new user gets wrong: identity leaks, silently wrong acceptances, tracebacks, resumed studies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from mtl.__main__ import main
from mtl.data.dataset import decode
from mtl.data.images import BACKGROUND
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.train.artifacts import load_checkpoint
from mtl.train.checkpoints import model_from_checkpoint
from tests.test_tune import STUDY


@pytest.fixture
def good(tmp_path, fgo_small) -> Path:
    dst = tmp_path / "set"
    shutil.copytree(fgo_small.parent, dst)
    return dst / fgo_small.name


def lines(csv: Path) -> list[str]:
    return csv.read_text().splitlines()


def write_lines(csv: Path, rows: list[str]) -> None:
    csv.write_text("\n".join(rows) + "\n")


def check(csv: Path, capsys) -> tuple[int, str]:
    rc = main(["check", str(csv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def row_of(csv: Path, split: str) -> int:
    """0-based index into lines() of the first data row of a split."""
    return next(i for i, row in enumerate(lines(csv)) if i and row.split(",")[2] == split)


# ---- leaks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["{} ", " {}", "UPPER", "{}\u00a0"])
def test_group_written_differently_is_still_one_identity(good, capsys, variant):
    rows = lines(good)
    tr, te = row_of(good, "train"), row_of(good, "test")
    train_group = rows[tr].split(",")[1]
    cells = rows[te].split(",")
    cells[1] = train_group.upper() if variant == "UPPER" else variant.format(train_group)
    rows[te] = ",".join(cells)
    write_lines(good, rows)
    rc, err = check(good, capsys)
    assert rc != 0
    leak = next(x for x in err.splitlines() if "also in 'train'" in x)
    assert leak.startswith(f"{good}:{te + 1}:") and f"(line {tr + 1})" in leak  # names both rows


def test_same_file_by_another_path_is_a_leak(good, capsys):
    rows = lines(good)
    tr, te = row_of(good, "train"), row_of(good, "test")
    train_img = rows[tr].split(",")[0]
    cells = rows[te].split(",")
    cells[0] = "./" + train_img
    rows[te] = ",".join(cells)
    write_lines(good, rows)
    rc, err = check(good, capsys)
    assert rc != 0
    leak = next(x for x in err.splitlines() if "one image in two splits" in x)
    assert leak.startswith(f"{good}:{te + 1}:") and f"line {tr + 1}" in leak


def test_symlink_to_a_train_image_is_a_leak(good, capsys):
    m = load_manifest(good)
    rows = lines(good)
    tr, te = row_of(good, "train"), row_of(good, "test")
    test_img = m.root / rows[te].split(",")[0]
    test_img.unlink()
    os.symlink(m.root / rows[tr].split(",")[0], test_img)
    rc, err = check(good, capsys)
    assert rc != 0 and "one image in two splits" in err


# ---- accepted but wrong ----------------------------------------------------------------------------
def test_duplicated_task_column_is_rejected(good, capsys):
    rows = lines(good)
    rows = [r + ("," + r.split(",")[3]) for r in rows]  # gender again as the last column
    write_lines(good, rows)
    rc, err = check(good, capsys)
    assert rc != 0 and f"{good}:1: column 'gender' appears twice" in err


def test_short_row_is_rejected_not_padded(good, capsys):
    rows = lines(good)
    rows[3] = ",".join(rows[3].split(",")[:-2])
    write_lines(good, rows)
    rc, err = check(good, capsys)
    assert rc != 0 and f"{good}:4: 6 field(s) but the header has 8" in err


def test_line_numbers_count_blank_lines(good, capsys):
    rows = lines(good)
    cells = rows[2].split(",")
    cells[4] = "Atlantis"
    rows[2] = ",".join(cells)
    write_lines(good, rows[:2] + [""] + rows[2:])
    rc, err = check(good, capsys)
    assert rc != 0 and f"{good}:4: task 'region'" in err


def test_task_listed_twice_in_spec(good, capsys):
    spec = good.with_name(good.stem + ".tasks.json")
    d = json.loads(spec.read_text())
    d["tasks"].append(d["tasks"][0])
    spec.write_text(json.dumps(d))
    rc, err = check(good, capsys)
    assert rc != 0 and "task 'gender' is listed twice (#1 and #6)" in err


def test_sixteen_bit_ramp_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # pillow really reads it as a deep image
    out = decode(path, 64)[0].numpy().astype(int)  # channel 0: greyscale -> equal channels
    expected = np.rint(ramp / 257.0).astype(int)
    assert np.abs(out - expected).max() <= 1
    assert (out == 255).mean() < 0.05  # convert("RGB") alone saturates ~94 % of the ramp


def test_rgba_is_composited_on_the_background(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., :3] = (255, 0, 0)  # red hidden under alpha 0 on the left half
    arr[:, 4:] = (0, 0, 255, 255)
    arr[:, :4, 3] = 0
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = decode(path, 8).permute(1, 2, 0).numpy()
    assert tuple(out[0, 0]) == BACKGROUND and tuple(out[0, 7]) == (0, 0, 255)


# ---- tracebacks that must be one line --------------------------------------------------------------
SPEC_CASES = {
    "root null": (lambda d: d.update(root=None), "'root' must be a non-empty path string"),
    "classes as numbers": (lambda d: d["tasks"][0].update(classes=[0, 1]), "'classes' must be a list of strings"),
    "classes as a string": (lambda d: d["tasks"][0].update(classes="MF"), "'classes' must be a list of strings"),
    "no kind": (lambda d: d["tasks"][0].pop("kind"), "task 'gender': no 'kind'"),
    "task not an object": (lambda d: d["tasks"].append("age"), "a task must be a JSON object"),
    "unknown key": (lambda d: d["tasks"][0].update(klasses=[]), "unknown key(s) klasses"),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec_is_one_line(good, capsys, case):
    spec = good.with_name(good.stem + ".tasks.json")
    d = json.loads(spec.read_text())
    SPEC_CASES[case][0](d)
    spec.write_text(json.dumps(d))
    rc, err = check(good, capsys)
    assert rc != 0 and SPEC_CASES[case][1] in err
    assert all(line.startswith(str(good)) or line.startswith(str(spec)) for line in err.strip().splitlines())


def test_nul_byte_in_image_path(good, capsys):
    rows = lines(good)
    cells = rows[1].split(",")
    cells[0] = "train/a\x00b.png"
    rows[1] = ",".join(cells)
    write_lines(good, rows)
    rc, err = check(good, capsys)
    assert rc != 0 and f"{good}:2: image path" in err and "NUL byte" in err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fgo_small) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    assert main(["train", "--manifest", str(fgo_small), "--epochs", "1", "--no-track", "--out", str(out),
                 "--set", "image_size=32"]) == 0
    return next(out.iterdir())


def bad_checkpoints(tmp: Path, good_dir: Path) -> dict[str, tuple[Path, str]]:
    ckpt = torch.load(good_dir / json.loads((good_dir / "index.json").read_text())["last"]["file"], weights_only=True)
    (tmp / "garbage.pt").write_bytes(b"\x80\x02 not a checkpoint")
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    torch.save({"model": ckpt["model"], "tasks": ckpt["tasks"]}, tmp / "noconfig.pt")
    tampered = dict(ckpt, model={k: (v[:1] if v.ndim else v) for k, v in ckpt["model"].items()})
    torch.save(tampered, tmp / "tampered.pt")
    (tmp / "emptydir").mkdir()
    return {"garbage": (tmp / "garbage.pt", "not a readable checkpoint"),
            "tensor": (tmp / "tensor.pt", "holds a Tensor, not an mtl checkpoint"),
            "no config": (tmp / "noconfig.pt", "not an mtl checkpoint (no config)"),
            "tampered": (tmp / "tampered.pt", "its weights do not fit"),
            "dir without index": (tmp / "emptydir", "no index.json")}


def test_train_from_bad_checkpoints_is_one_line(tmp_path, checkpoint, fgo_small, capsys):
    for name, (path, needle) in bad_checkpoints(tmp_path, checkpoint).items():
        rc = main(["train", "--manifest", str(fgo_small), "--epochs", "1", "--no-track", "--init", str(path)])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err, name
        assert len(err.strip().splitlines()) == 1, name
    with pytest.raises(UserError, match="not an mtl checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    model, cfg, tasks = model_from_checkpoint(load_checkpoint(checkpoint))  # the real one still loads
    assert cfg.image_size == 32 and len(tasks) == 5 and not model.training


# ---- resumed and parallel studies never repeat a configuration -------------------------------------
def params_of(name: str) -> list[dict]:
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    s = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(f"optuna/{name}.log")))
    return [t.params for t in s.trials]


def test_resumed_and_parallel_study_never_repeats_parameters(isolated_stores, fgo_small):
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "rs.py").write_text(STUDY.format(manifest=fgo_small))
    for _ in range(3):  # resumed before TPE's random start-up is over: the old seed replayed trial 0
        assert main(["tune", "rs", "--trials", "1"]) == 0
    assert main(["tune", "rs", "--trials", "2", "--workers", "2"]) == 0
    params = params_of("rs")
    assert len(params) == 5
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 5, params


def test_exact_duplicate_configuration_is_not_trained(isolated_stores, fgo_small):
    one_point = STUDY.replace('[8, 16]', '[8]').replace(
        'bn_momentum=trial.suggest_float("bn_momentum", 0.01, 0.5, log=True),', '').replace(
        'loss_weights={{"alignment": trial.suggest_float("loss_weight.alignment", 0.5, 2, log=True)}}', '')
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "one.py").write_text(one_point.format(manifest=fgo_small))
    assert main(["tune", "one", "--trials", "3"]) == 0
    import mlflow
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    s = optuna.load_study(study_name="one", storage=JournalStorage(JournalFileBackend("optuna/one.log")))
    assert [t.state.name for t in s.trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [t.user_attrs.get("duplicate_of") for t in s.trials[1:]] == [0, 0]
    runs = mlflow.search_runs(experiment_names=["one"], filter_string="tags.`mtl.role` = 'trial'",
                              output_format="list")
    assert [r.info.run_name for r in runs] == ["trial-0"]  # nothing trained or logged for the repeats


def test_help_and_check_do_not_import_torch_or_mlflow(good):
    code = ("import sys; from mtl.__main__ import main; main(['check', sys.argv[1], '--no-images']); "
            "print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, str(good)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "[]", p.stderr


# ---- config and study-file checks: one home each, one line each ------------------------------------
def test_train_config_validate_holds_every_check():
    from mtl.train.config import TrainConfig
    for bad, needle in ((dict(scheduler="step"), "scheduler='step'"), (dict(best_epoch="last"), "best_epoch"),
                        (dict(jacobian_on="x"), "jacobian_on"), (dict(dropout=1.0), "dropout"),
                        (dict(bn_momentum=0.0), "bn_momentum"), (dict(epochs=0), "epochs"), (dict(device="tpu"), "device"),
                        (dict(method="dwa", loss_weights={"gender": 2.0}), "loss_weights are for method=fixed"),
                        (dict(loss_weights={"gender": -1.0}), "must be >= 0"),
                        (dict(loss_weights={"nope": 1.0}), "unknown task"), (dict(method="gradnorm"), "gradnorm"),
                        (dict(kind_options={"regression": {"loss": "cubic"}}), "cubic")):
        with pytest.raises(UserError, match=needle):
            TrainConfig(**bad).validate(["gender", "region"])
    assert TrainConfig().validate(["gender"]) == TrainConfig()


def test_a_study_file_typo_is_one_line_naming_the_closest_setting(isolated_stores, fgo_small, capsys):
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "typo.py").write_text(
        STUDY.format(manifest=fgo_small) + "\nSERVE_MAX_TRIAL = 2\n")
    rc = main(["tune", "typo", "--trials", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "typo.py: unknown setting SERVE_MAX_TRIAL (did you mean SERVE_MAX_TRIALS?)" in err
    assert len(err.strip().splitlines()) == 1 and not (isolated_stores / "optuna" / "typo.log").exists()
    (isolated_stores / "experiments" / "typo.py").write_text(
        STUDY.format(manifest=fgo_small).replace("def search_space(", "def search_spaces("))
    assert main(["tune", "typo", "--trials", "1"]) == 2
    assert "defines search_spaces, not search_space" in capsys.readouterr().err
