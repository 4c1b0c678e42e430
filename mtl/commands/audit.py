"""`python -m mtl audit-pruning <study> [--sample N]` (`make audit-pruning STUDY=s [SAMPLE=N]`): pruning regret.

Re-runs a seeded sample of the study's early-stopped trials to the end (mtl/tune/audit.py) and reports how
many would have joined the Pareto front and the hypervolume lost, beside the fraction of epochs early
stopping saved. Written to `reports/<study>/audit_pruning.md` (and `.json`, with each re-run's val curve) and logged on the study's parent run
(metrics `audit/*`, artifact `report/audit_pruning.md`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.track import tracking
from mtl.tune.audit import audit_pruning
from mtl.tune.runs import ensure_pretrain, find_parent
from mtl.tune.storage import open_existing


def main(args) -> int:
    if args.sample < 0:
        raise UserError(f"SAMPLE={args.sample}: must be 0 (every early-stopped trial) or a positive number")
    study, s, _ = open_existing(args.study, args.storage)
    if study.early_stop is None:
        raise UserError(f"study '{study.name}' has no EARLY_STOP: nothing was stopped early, nothing to audit")
    manifest = load_manifest(study.manifest, check_images=True)
    client = tracking.get_client()
    experiment_id = tracking.ensure_experiment(client, study.name)
    parent = find_parent(client, study.name)
    pretrain = ensure_pretrain(study, manifest, client, experiment_id, parent)
    audit = audit_pruning(study, s, manifest, pretrain, args.sample, args.seed)
    md = audit.to_markdown(study.objectives)
    out = Path("reports") / study.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit_pruning.md").write_text(md)
    (out / "audit_pruning.json").write_text(json.dumps(
        {"metrics": audit.metrics(), "budget": audit.budget, "replays": [dataclasses.asdict(r) for r in audit.replays]}))
    if parent:
        client.log_artifact(parent, str(out / "audit_pruning.md"), "report")
        tracking.RunLogger(client, "", "", run_id=parent).log_metrics(audit.metrics())
    print(md)
    print(f"saved {out / 'audit_pruning.md'}" + (" and logged on the parent run" if parent else ""))
    return 0
