"""The model registry: one registered model per study (`<study>`), its versions and aliases
(`best-<task>`, `ensemble`), retiring versions no alias names, and removing the checkpoint files of
dominated trials (no front, alias or ensemble can need them again).

Every download goes into a temporary directory that is removed; a model's checkpoints load into memory.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow

from mtl.errors import UserError
from mtl.results.selection import Member
from mtl.serve import pyfunc
from mtl.tasks import Task
from mtl.track import mlflow_adapter, tracking
from mtl.train.artifacts import TrialArtifacts, is_model_package
from mtl.train.checkpoints import checkpoint_from_model


def ensure_registered_model(client, study_name: str) -> None:
    """The study's registered model, created once (already there, or another process first: fine)."""
    try:
        client.create_registered_model(study_name, description=f"per-task best models of study {study_name}")
    except mlflow.exceptions.MlflowException:
        pass


MODEL_FORMAT = "pyfunc-2"  # registry versions of an older model format are replaced (2: mtl.serve.pyfunc)


def register_best(client, study_name: str, best: dict[str, Member], manifest) -> dict[str, str]:
    """Each task's best checkpoint as an MLflow logged model (pyfunc, mtl/serve/pyfunc.py) on its trial run,
    registered as `<study>` with alias `best-<task>`. Tasks whose best is the same checkpoint share one
    model and version; re-running on an unchanged study keeps the versions it already made, and versions
    no alias names any more are deleted with their files."""
    ensure_registered_model(client, study_name)
    groups: dict[tuple[str, str], list[str]] = {}
    runs: dict[str, TrialArtifacts] = {}
    for task, m in best.items():
        run = runs.setdefault(m.run_id, TrialArtifacts(client, m.run_id))
        groups.setdefault((m.run_id, run.best_file(task)), []).append(task)
    example = manifest.root / manifest.rows("val")["image"].iloc[0]
    dataset = mlflow.data.from_pandas(manifest.table, source=str(manifest.path), name=manifest.name)
    versions = {}
    for (run_id, file), tasks in groups.items():
        current = [alias_version(client, study_name, f"best-{t}") for t in tasks]
        if all(v is not None and v.run_id == run_id and v.tags.get("checkpoint") == file
               and v.tags.get("format") == MODEL_FORMAT for v in current):
            versions.update({t: v.version for t, v in zip(tasks, current)})
            continue
        ckpt = runs[run_id].checkpoint(file)
        model_tasks = [Task.from_dict(t) for t in ckpt["tasks"]]
        info = runs[run_id].index["best"]
        trial = next(m.number for t, m in best.items() if m.run_id == run_id)
        logged = pyfunc.log_model(
            run_id, "best-" + "-".join(tasks), {"m0": ckpt}, model_tasks, {t.name: {"m0": 1.0} for t in model_tasks},
            example, metrics={f"val/{manifest.task(t).metric_key}": (info[t]["score"], info[t]["epoch"]) for t in tasks},
            dataset=dataset,
            params={"study": study_name, "trial": trial, "checkpoint": file, "best_for": ",".join(tasks)})
        mv = client.create_model_version(study_name, logged.model_uri, run_id=run_id, model_id=logged.model_id, tags={
            "task": ",".join(tasks), "trial": str(trial), "checkpoint": file, "format": MODEL_FORMAT,
            "epoch": str(info[tasks[0]]["epoch"]), **{f"val_score.{t}": f"{info[t]['score']:.6g}" for t in tasks},
            # a version several tasks share has no single score: only their own `val_score.<task>` tags
            **({"val_score": f"{info[tasks[0]]['score']:.6g}"} if len(tasks) == 1 else {})})
        for t in tasks:
            client.set_registered_model_alias(study_name, f"best-{t}", mv.version)
            versions[t] = mv.version
    retire_unaliased(client, study_name)
    return versions


def register_composite(client, study_name: str, run_id: str, best: dict[str, Member], manifest) -> str:
    """One model for every task's best (alias `best`), logged on `run_id` (the study's parent run): its
    members are the per-task best checkpoints, each task answered by its own; members that hold the same
    backbone weights share that forward (mtl/serve/pyfunc.py), so it serves near one model's cost when the
    backbone is shared. Unchanged bests keep their version."""
    members, combine, files = {}, {}, {}
    runs: dict[str, TrialArtifacts] = {}
    for task, m in best.items():
        key = (m.run_id, runs.setdefault(m.run_id, TrialArtifacts(client, m.run_id)).best_file(task))
        name = members.setdefault(key, f"m{len(members)}")
        combine[task] = {name: 1.0}
        files[task] = f"{m.number}:{key[1]}"
    signature = json.dumps(files, sort_keys=True)
    current = alias_version(client, study_name, "best")
    if current is not None and current.tags.get("members_of") == signature and current.tags.get("format") == MODEL_FORMAT:
        return current.version
    ckpts = {name: runs[r].checkpoint(f) for (r, f), name in members.items()}
    tasks = [manifest.task(t) for t in best]
    example = manifest.root / manifest.rows("val")["image"].iloc[0]
    logged = pyfunc.log_model(run_id, "best", ckpts, tasks, combine, example,
                               params={"study": study_name, **{f"best.{t}": f for t, f in files.items()}})
    ensure_registered_model(client, study_name)
    mv = client.create_model_version(study_name, logged.model_uri, run_id=run_id, model_id=logged.model_id, tags={
        "task": "best", "members": str(len(members)), "members_of": signature, "format": MODEL_FORMAT})
    client.set_registered_model_alias(study_name, "best", mv.version)
    retire_unaliased(client, study_name)
    return mv.version


def register_ensemble(client, study_name: str, run_id: str, tasks, choices, front, cache, manifest) -> str:
    """The chosen ensemble as a logged model (pyfunc) on the ensemble run, registered as a version of
    `<study>` with alias `ensemble`: its members are the (trial, best-epoch checkpoint) pairs the chosen
    combinations use, each task averaging its own members' probabilities with the chosen weights."""
    run_of = {m.number: m.run_id for m in front}
    members, combine = {}, {}
    for t in tasks:
        combine[t.name] = {}
        for number, w in choices[t.name]["chosen"].weights.items():
            key = (run_of[number], cache.best_file(run_of[number], t.name))
            name = members.setdefault(key, f"m{len(members)}")
            combine[t.name][name] = combine[t.name].get(name, 0.0) + float(w)
    ckpts = {name: cache.artifacts(r).checkpoint(f) for (r, f), name in members.items()}
    example = manifest.root / manifest.rows("val")["image"].iloc[0]
    val = {f"val/{t.metric_key}": (choices[t.name]["chosen"].val, 0) for t in tasks}
    dataset = mlflow.data.from_pandas(manifest.table, source=str(manifest.path), name=manifest.name)
    logged = pyfunc.log_model(run_id, "ensemble", ckpts, tasks, combine, example, metrics=val, dataset=dataset,
                               params={"study": study_name, **{f"chosen.{t.name}": choices[t.name]["chosen"].describe()
                                                               for t in tasks}})
    ensure_registered_model(client, study_name)
    mv = client.create_model_version(study_name, logged.model_uri, run_id=run_id, model_id=logged.model_id,
                                     tags={"task": "ensemble", "members": str(len(members))})
    client.set_registered_model_alias(study_name, "ensemble", mv.version)
    retire_unaliased(client, study_name)  # the ensemble chosen before, if no best-<task> is it
    print(f"registered models:/{study_name}@ensemble -> version {mv.version} ({len(members)} member checkpoint(s))")
    return mv.version


def remove_dominated_checkpoints(client, members: list[Member], front: list[Member]) -> tuple[int, int]:
    """Delete the checkpoint files of completed trials off the front. A dominated trial stays dominated as
    trials are added, so no later front, registry alias or ensemble (all drawn from the front) needs them;
    their metrics, val outputs and index stay. Returns (trials, bytes freed)."""
    on_front = {m.run_id for m in front}
    n, freed = 0, 0
    for m in members:
        if m.run_id in on_front:
            continue
        run = client.get_run(m.run_id)
        if run.data.tags.get("checkpoints", "").startswith("removed"):
            continue
        files = [f for f in client.list_artifacts(m.run_id, "checkpoints") if f.path.rsplit("/", 1)[-1].startswith("epoch-")]
        failed = 0
        for f in files:
            try:
                mlflow_adapter.delete_artifacts(run.info.artifact_uri, f.path)
                freed += f.file_size or 0
            except Exception:  # a store that cannot delete: keep going, keep the files
                failed += 1
        if not failed:
            client.set_tag(m.run_id, "checkpoints", "removed (dominated)")
            n += 1
    return n, freed


def alias_version(client, name: str, alias: str):
    """The version an alias of registered model `name` points to, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:
        return None


def load_best(study_name: str, task: str) -> dict:
    """The checkpoint dict behind `models:/<study>@best-<task>` (loaded with weights_only=True), with the
    backbone base it was stored against taken from the model's own copy."""
    if alias_version(tracking.get_client(), study_name, f"best-{task}") is None:
        raise UserError(f"no registered model '{study_name}@best-{task}'; run: make pareto STUDY={study_name}")
    with tempfile.TemporaryDirectory(prefix="mtl-model-") as tmp:  # read, then gone: no residue
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{study_name}@best-{task}", dst_path=tmp))
        if not is_model_package(local):  # registered before models were MLflow models
            raise UserError(f"models:/{study_name}@best-{task} is not an mtl model; run: make pareto STUDY={study_name}")
        return checkpoint_from_model(local, materialize=True)


def retire_unaliased(client, name: str) -> int:
    """Delete the versions of registered model `name` that no alias points to any more (a task's best
    moved, an ensemble was chosen again), with their logged models and those models' files: the
    registry keeps what its aliases name, and each replaced model stops costing its checkpoints and
    base backbone. Returns how many versions went."""
    kept = {str(v) for v in client.get_registered_model(name).aliases.values()}
    gone = 0
    for mv in client.search_model_versions(f"name = '{name}'"):
        if str(mv.version) in kept:
            continue
        client.delete_model_version(name, mv.version)
        gone += 1
        model_id = model_id_of(mv)
        if not model_id:
            continue
        try:
            model = client.get_logged_model(model_id)
            client.delete_logged_model(model_id)
            mlflow_adapter.delete_artifacts(model.artifact_location)
        except Exception:  # a store that cannot delete files: the registry is clean, the files stay
            pass
    return gone


def model_id_of(mv) -> str | None:
    """The logged model behind a registry version (some stores leave `model_id` empty: its source names it)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = mv.source or ""
    return source[len("models:/"):] if source.startswith("models:/m-") else None
