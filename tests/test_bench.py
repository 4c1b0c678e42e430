"""`python -m mtl bench --quick` writes every key with the right type (speeds are not asserted here)."""

from __future__ import annotations

import json

from mtl.__main__ import main
from mtl.bench.benchmarks import TARGETS


def test_bench_quick_json(fgo_small, isolated_stores, capsys):
    tmp_path = isolated_stores  # the cwd: no default study has run here, so early_stopped_epoch_fraction is n/a
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--image-size", "32", "--batch-size", "8", "--manifest", str(fgo_small),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in TARGETS:
        assert key in res
        if key not in ("amp_vs_fp32", "early_stopped_epoch_fraction", "ensemble_vs_single", "composite_vs_single"):
            assert isinstance(res[key], float) and res[key] > 0 or key == "tracking_overhead_pct"
    timed = [k for k in TARGETS if isinstance(res[k], float) and k != "early_stopped_epoch_fraction"]
    assert len(timed) >= 8 and res["rounds"] == 2
    for key in timed:  # each figure is the median of alternating rounds, with the rounds' min-max beside it
        lo, hi = res["spread"][key]
        assert lo <= res[key] <= hi, key
    assert res["amp_vs_fp32"] is None or isinstance(res["amp_vs_fp32"], float)
    assert res["early_stopped_epoch_fraction"] is None
    assert res["ensemble_vs_single"] is None and res["composite_vs_single"] is None  # no default study's models here
    assert all(isinstance(v, float) and v > 0 for v in res["raw"].values())
    assert {"epoch_loader_img_s", "decode_img_s"} <= set(res["raw_data"])
    assert "step_vs_bare" in capsys.readouterr().out
    import mlflow  # the same figures as a run of experiment `bench`, with the json beside them
    run = mlflow.search_runs(experiment_names=["bench"], output_format="list")[0]
    assert run.data.metrics["step_vs_bare"] == res["step_vs_bare"] and run.data.tags["mtl.role"] == "bench"
    assert res["study"] == run.data.params["study"] == "fgo_regularization"  # whose models the serving keys read
    capsys.readouterr()
    assert main(["bench", "--quick", "--study", "no_such_study", "--out", str(out)]) == 2  # before any timing
    assert "no study 'no_such_study'" in capsys.readouterr().err
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)] == ["bench.json"]
