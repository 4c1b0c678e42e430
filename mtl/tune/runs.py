"""Runs a study needs besides its trials, each trained once and found again by a key: the PRETRAIN stage,
single-task baselines and seed repeats (`find_or_train`); and the study's parent run.

A key digests everything that decides a run's outcome (its config, the task, the manifest's and task
spec's bytes), so a resumed study, another worker, another study with the same stage or an interrupted
`confirm` reuses a finished run instead of training it again, and never reuses one of another setup.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import mlflow

from mtl.bootstrap import sample_stats, split_intervals
from mtl.data.manifest import load_manifest
from mtl.data.pretext import rotation_manifest
from mtl.track import tracking
from mtl.train.artifacts import TrialArtifacts
from mtl.train.loop import fit
from mtl.tune.studies import PARENT_TAG, ROLE_TAG, STUDY_TAG, Study

KEY_TAG = "mtl.run_key"


def run_key(what: dict, manifest=None) -> str:
    """A digest of `what` (JSON) and, with a manifest, its CSV's and task spec's bytes."""
    digest = hashlib.sha1(json.dumps(what, sort_keys=True).encode())
    for f in ((manifest.path, manifest.spec_path) if manifest is not None else ()):
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()[:16]


def find_finished(client, role: str, key: str, experiment_ids: list[str] | None = None):
    """The finished run of this role and key (in these experiments, or in any), or None."""
    where = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(where, f"tags.`{ROLE_TAG}` = '{role}' and tags.`{KEY_TAG}` = '{key}' "
                                      f"and attributes.status = 'FINISHED'", max_results=1)
    return found[0] if found else None


def find_or_train(client, role: str, key: str, experiment_id: str, name: str, parent_id: str | None,
                  tags: dict, train, anywhere: bool = True):
    """The finished run of `role` and `key` (in any experiment, or with `anywhere=False` only in this one);
    else a new run `name` (under the parent) in which `train(run)` trains and logs. Returns the MLflow run."""
    found = find_finished(client, role, key, None if anywhere else [experiment_id])
    if found is not None:
        return found
    with tracking.RunLogger(client, experiment_id, name, parent_id, {**tags, ROLE_TAG: role, KEY_TAG: key}) as run:
        train(run)
    return client.get_run(run.run_id)


def ensure_pretrain(study: Study, manifest, client, experiment_id: str, parent_id: str | None) -> str | None:
    """The study's PRETRAIN stage, trained once (role `pretrain`, under the parent) and reused by every
    trial, worker, resume and any study with the same stage. It never sees a target label or a val/test
    image: it learns rotation prediction on the train images (mtl/data/pretext.py). Returns its
    checkpoint as a `runs:/` URI, which every machine can resolve."""
    if study.pretrain is None:
        return None
    pretext = load_manifest(rotation_manifest(manifest))

    def train(run):
        print(f"pretrain stage ({study.pretrain.epochs} epochs, {study.pretrain.backbone}, rotation prediction on "
              f"{len(pretext.rows('train'))} rotated train images, no label): training it once")
        run.log_params({**tracking.flatten_config(study.pretrain), "manifest": study.manifest,
                        "pretext": "rotation", "pretext_manifest": str(pretext.path)})
        with tempfile.TemporaryDirectory(prefix="mtl-pretrain-") as tmp:
            result = fit(study.pretrain, pretext, Path(tmp) / "checkpoints", on_epoch=run.log_epoch)
            ckpt = f"epoch-{result.history[-1]['epoch']}.pt"
            run.log_artifact(result.checkpoint_dir / ckpt, "checkpoints")
            run.set_tags({"checkpoint": ckpt})

    found = find_or_train(client, "pretrain", run_key({"cfg": study.pretrain.to_dict(), "pretext": "rotation"}, pretext),
                          experiment_id, "pretrain", parent_id, {STUDY_TAG: study.name}, train)
    return f"runs:/{found.info.run_id}/checkpoints/{found.data.tags['checkpoint']}"


def ensure_single_task(study: Study, manifest, client, experiment_id: str, parent_id: str, pretrain: str | None,
                       epochs: int) -> dict[str, str]:
    """SINGLE_TASK_BASELINES: for each objective, BASE with that head alone, the same epochs and warm start
    (runs `single-<task>`, role `single-task`), trained once. Returns task -> run id; their val outputs
    give Δm %."""
    if not study.single_task:
        return {}
    # the plain loss of one task: no multi-task method, no weights for tasks the model does not have
    cfg = study.base.replace(epochs=epochs, init=pretrain or study.base.init, method="fixed", method_args={},
                             loss_weights={})
    runs = {}
    for task in study.objectives:
        def train(run, task=task):
            print(f"single-task baseline '{task}' ({epochs} epochs): training it once")
            run.log_params({**tracking.flatten_config(cfg), "manifest": study.manifest, "single_task": task})
            with run.artifact_dir("checkpoints") as ckpt_dir:
                result = fit(cfg, manifest, ckpt_dir, on_epoch=run.log_epoch, only=[task])
            t = manifest.task(task)
            ci = split_intervals([t], result.val_outputs, manifest, "val")[task]
            run.log_metrics({f"best_val/{t.metric_key}": ci.value, f"best_val/{t.metric_key}_lo": ci.lo,
                             f"best_val/{t.metric_key}_hi": ci.hi})

        found = find_or_train(client, "single-task", run_key({"cfg": cfg.to_dict(), "task": task}, manifest),
                              experiment_id, f"single-{task}", parent_id, {STUDY_TAG: study.name, "mtl.task": task},
                              train)
        runs[task] = found.info.run_id
    return runs


def single_task_stats(tasks, manifest, runs: dict[str, str]) -> dict:
    """Each single-task baseline's val statistics (its best epoch's outputs, from its run's artifacts)."""
    targets, masks = manifest.targets("val")
    out = {}
    for t in tasks:
        outputs = TrialArtifacts(mlflow.MlflowClient(), runs[t.name]).val_outputs()["outputs"][t.name]
        out[t.name] = sample_stats(t, outputs, targets[t.name], masks[t.name])
    return out


def find_parent(client, study_name: str) -> str | None:
    """Run id of the study's parent run, if the study has been tuned in this MLflow store."""
    exp = client.get_experiment_by_name(study_name)
    if exp is None:
        return None
    found = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'", max_results=1)
    return found[0].info.run_id if found else None


def parent_run(client, experiment_id: str, study: Study, storage_url: str, manifest) -> str:
    """The study's parent run, created once and reused on resume."""
    found = find_parent(client, study.name)
    if found:
        return found
    run = tracking.RunLogger(client, experiment_id, study.name, tags={STUDY_TAG: study.name, ROLE_TAG: "parent",
                                                                     "mlflow.note.content": study.doc})
    run.log_params({"manifest": study.manifest, "objectives": ",".join(study.objectives),
                    "storage": tracking.redact(storage_url)})
    run.log_dataset(manifest)  # creates the experiment's dataset row once, before workers race for it
    return run.run_id


def trial_tags(study: Study, trial_number: int, trial_id: int, parent_id: str) -> dict:
    """A trial run's tags: its study, role, Optuna trial and the study's parent run (trials are top-level
    rows in the UI, so the link is a tag, not MLflow's parent)."""
    return {STUDY_TAG: study.name, ROLE_TAG: "trial", "optuna.study": study.name, "optuna.trial_number": trial_number,
            "optuna.trial_id": trial_id, PARENT_TAG: parent_id}

