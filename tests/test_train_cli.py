"""`python -m mtl train` end to end: MLflow run with the studies' keys, config overrides, fine-tuning."""

from __future__ import annotations

import mlflow
import pytest
import torch

from mtl.__main__ import main
from mtl.train.config import TrainConfig


def test_train_logs_run_and_finetune(fgo_small, isolated_stores, capsys):
    rc = main(["train", "--manifest", str(fgo_small), "--epochs", "2", "--set", "image_size=32",
               "--set", "head_dims=16", "--set", "loss_weights.alignment=2", "--out", "ck"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "constant" in out and "alignment" in out
    runs = mlflow.search_runs(experiment_names=["train"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["head.dims"] == "16" and run.data.params["loss_weight.alignment"] == "2"
    client = mlflow.MlflowClient()
    hist = client.get_metric_history(run.info.run_id, "val/alignment/acc")
    assert [m.step for m in hist] == [1, 2]
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert "checkpoints/index.json" in arts

    # fine-tune one head from that checkpoint: the other heads stay bit-identical
    ckpt_dir = next((isolated_stores / "ck").iterdir())
    before = torch.load(next(ckpt_dir.glob("epoch-2.pt")), weights_only=True)["model"]
    rc = main(["train", "--manifest", str(fgo_small), "--epochs", "1", "--finetune", "colors",
               "--init", str(ckpt_dir), "--out", "ft", "--no-track"])
    assert rc == 0
    ft_dir = next((isolated_stores / "ft").iterdir())
    after = torch.load(ft_dir / "epoch-1.pt", weights_only=True)["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("heads.colors") for k in changed)


@pytest.mark.parametrize("args,needle", [
    (["--set", "nope=1"], "unknown config key 'nope'"),
    (["--set", "epochs=many"], "cannot read 'many'"),
    (["--epochs", "0"], "must be at least 1"),
    (["--finetune", "colors"], "--finetune needs --init"),
])
def test_train_bad_input_is_one_line(fgo_small, isolated_stores, capsys, args, needle):
    rc = main(["train", "--manifest", str(fgo_small), "--no-track", *args])
    err = capsys.readouterr().err
    assert rc != 0 and needle in err and "Traceback" not in err


def test_config_overrides_types():
    cfg = TrainConfig().with_overrides(["head_dims=256,256", "bn_momentum=0.2", "augment=false", "weights=none"])
    assert cfg.head_dims == [256, 256] and cfg.bn_momentum == 0.2 and cfg.augment is False and cfg.weights is None
    with pytest.raises(Exception, match="unknown config key"):
        TrainConfig.from_dict({"lr": 1})
