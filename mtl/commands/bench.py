"""`python -m mtl bench` (`make bench`): performance ratios (mtl/bench/benchmarks.py) -> `reports/bench.json`, a
table, and a run of MLflow experiment `bench` (compare commits in the UI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mtl.bench.benchmarks import TARGETS, run
from mtl.track import tracking


def table(res: dict) -> str:
    lines = [f"machine: {res['machine']}; {res['backbone']} {res['image_size']}px, batch {res['batch_size']}; "
             f"medians of {res.get('rounds', '?')} alternating rounds [min-max over the rounds]; "
             f"study {res.get('study', '?')}",
             f"{'key':<30}{'median':>9}  {'spread':<17}  target"]
    for k, target in TARGETS.items():
        v, sp = res.get(k), res.get("spread", {}).get(k)
        spread = f"[{sp[0]:.3f}, {sp[1]:.3f}]" if sp else ""
        lines.append(f"{k:<30}{'n/a' if v is None else f'{v:.3f}':>9}  {spread:<17}  {target}")
    return "\n".join(lines)


def main(args) -> int:
    if args.study is not None:  # a study named on purpose: unknown is one line, not serving keys quietly left out
        from mtl.tune.studies import load_study
        load_study(args.study)
    res = run(args.backbone, args.image_size, args.batch_size, args.quick, args.manifest, args.study)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    print(table(res))
    run_id = log_run(res, out)
    print(f"written {out}; MLflow experiment 'bench', run {run_id}")
    return 0


def log_run(res: dict, path: Path) -> str:
    """The results as a run of experiment `bench` in the default store (one run per `make bench`, with
    the git commit), so benchmarks are compared across commits in the UI like trials."""
    client = tracking.get_client()
    exp = tracking.ensure_experiment(client, "bench")
    with tracking.RunLogger(client, exp, "bench", tags={"mtl.role": "bench"}) as run:
        run.log_params({k: str(res[k]) for k in ("machine", "backbone", "image_size", "batch_size", "study") if k in res})
        run.log_metrics({k: v for k in TARGETS if isinstance(v := res.get(k), float) and math.isfinite(v)})
        run.log_artifact(path)
    return run.run_id
