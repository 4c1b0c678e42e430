"""HydraNets (and ensembles of them) as MLflow 3 logged models with a pyfunc flavour.

`mlflow.pyfunc.load_model("models:/<study>@best-<task>").predict(df)` takes a DataFrame with an `image`
column (image paths, or images inline as `data:image/png;base64,...` URIs, as in the model's input
example, which names no file of the machine that logged it) and returns one row per image: each task's prediction (`<task>`: a class, the labels
of a multilabel task over its threshold joined by `|` as in the manifests, or a number) and its probabilities
(`<task>.<class>`). `mlflow models serve -m models:/<study>@best-<task> --env-manager local` answers the
same over REST. Images are decoded and normalised as mtl/serve/inference.py does (each backbone stage the
members share is run once, mtl/model/prefix.py), so labels equal `make predict`'s.

A model holds its members' checkpoints and, once, the warm-start backbone they were stored against
(checkpoints of a frozen pretrained backbone keep only what differs from it), so it loads with no
access to the tracking server that trained it.
"""

from __future__ import annotations

import base64
import io
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image

from mtl.data.dataset import decode
from mtl.errors import UserError
from mtl.model.prefix import member_digests, shared_forward
from mtl.results.combine import average
from mtl.serve.inference import BATCH
from mtl.tasks import Task
from mtl.train.artifacts import load_checkpoint, read_spec, write_spec
from mtl.train.checkpoints import backbone_state, model_from_checkpoint

SPEC_KEY = "spec"  # the pyfunc artifact holding the package's spec (mtl/train/artifacts.py)


DATA_URI = "data:image/png;base64,"


def embedded(value: str) -> bytes | None:
    """The bytes of an image given inline as a data URI (`data:image/...;base64,...`), else None."""
    if not value.startswith("data:image/"):
        return None
    try:
        return base64.b64decode(value.split(",", 1)[1], validate=True)
    except (IndexError, ValueError):
        raise MlflowException("an image data URI that is not base64", INVALID_PARAMETER_VALUE) from None


def example_image(path: Path, size: int = 32) -> str:
    """A small copy of `path` as a PNG data URI: an input example that names no file of this machine."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return DATA_URI + base64.b64encode(buf.getvalue()).decode()


def combine_outputs(tasks, outputs: dict[str, dict], combine: dict[str, dict[str, float]]) -> dict[str, torch.Tensor]:
    """Per task: one member's output, or the weighted average of several members' probabilities."""
    out = {}
    for t in tasks:
        w = combine[t.name]
        out[t.name] = (outputs[next(iter(w))][t.name] if len(w) == 1 else
                       average(t, [outputs[m][t.name] for m in w], list(w.values())))
    return out


def frame(tasks, outputs: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per image: `<task>` the readable prediction, `<task>.<class>` its probabilities."""
    n = len(next(iter(outputs.values())))
    rows = [{} for _ in range(n)]
    for t in tasks:
        probs = t.kind_impl.class_probs(t, outputs[t.name].float()) if t.classes else None
        for i in range(n):
            rows[i][t.name] = t.kind_impl.to_cell(t.predict(outputs[t.name][i]))
            if probs is None:
                continue
            for c, v in zip(t.classes, probs[i].tolist()):
                rows[i][f"{t.name}.{c}"] = float(v)
    columns = [c for t in tasks for c in [t.name, *(f"{t.name}.{k}" for k in t.classes)]]
    return pd.DataFrame(rows, columns=columns)  # the signature's columns even for an empty input


class HydraNetModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour: members (checkpoints), how each task combines them, the task spec."""

    def load_context(self, context):
        spec = read_spec(Path(context.artifacts[SPEC_KEY]))
        self.tasks = [Task.from_dict(t) for t in spec["tasks"]]
        self.combine = spec["combine"]
        self.members = {}
        for name, member in spec["members"].items():
            ckpt = load_checkpoint(context.artifacts[name])
            if member.get("base"):  # the backbone weights it left out, from the copy shipped with the model
                ckpt["config"] = {**ckpt["config"], "init": context.artifacts[member["base"]]}
            self.members[name] = model_from_checkpoint(ckpt)[:2]
        self.digests = {name: member_digests(model) for name, (model, _) in self.members.items()}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in df.columns:
            raise MlflowException("the input needs an 'image' column of image paths", INVALID_PARAMETER_VALUE)
        paths = [embedded(str(p)) or Path(str(p)) for p in df["image"]]
        missing = [str(p) for p in paths if isinstance(p, Path) and not p.is_file()]
        if missing:
            raise MlflowException(f"image not found: {missing[0]}", INVALID_PARAMETER_VALUE)
        if not paths:
            return frame(self.tasks, {t.name: torch.zeros(0) for t in self.tasks})
        sizes = sorted({cfg.image_size for _, cfg in self.members.values()})
        parts: dict[str, dict[str, list]] = {}
        for i in range(0, len(paths), BATCH):  # each image decoded once per size, each shared stage run once
            try:
                batch = {n: torch.stack([decode(p, n) for p in paths[i:i + BATCH]]) for n in sizes}
            except (UserError, OSError, ValueError) as e:  # an unreadable image: the caller's input, not a crash
                raise MlflowException(f"cannot read an input image: {e}", INVALID_PARAMETER_VALUE) from None
            for name, outs in shared_forward(self.members, self.digests, batch).items():
                for k, v in outs.items():
                    parts.setdefault(name, {}).setdefault(k, []).append(v)
        outputs = {name: {k: torch.cat(v) for k, v in outs.items()} for name, outs in parts.items()}
        return frame(self.tasks, combine_outputs(self.tasks, outputs, self.combine))


def package(tmp: Path, members: dict[str, dict], tasks, combine: dict) -> dict[str, str]:
    """Write the members' checkpoints, their warm-start bases (each distinct one once) and the spec into
    `tmp`; returns the pyfunc `artifacts` mapping."""
    artifacts, bases, spec_members = {}, {}, {}
    for name, ckpt in members.items():
        init = (ckpt.get("config") or {}).get("init")
        entry = {}
        try:
            base_keys = backbone_state(init) if init else {}
        except UserError:  # the base moved: fine for a checkpoint that stored its whole backbone
            if not any(k.startswith("backbone.") for k in ckpt["model"]):
                raise
            base_keys = {}
        if any(f"backbone.{k}" not in ckpt["model"] for k in base_keys):
            # stored against its warm-start base: ship that base's backbone once for all members
            if init not in bases:
                bases[init] = f"base{len(bases)}"
                torch.save(backbone_state(init), tmp / f"{bases[init]}.pt")
                artifacts[bases[init]] = str(tmp / f"{bases[init]}.pt")
            entry["base"] = bases[init]
        keep = {k: ckpt[k] for k in ("model", "config", "tasks", "epoch") if k in ckpt}
        torch.save(keep, tmp / f"{name}.pt")
        artifacts[name] = str(tmp / f"{name}.pt")
        spec_members[name] = entry
    artifacts[SPEC_KEY] = str(write_spec(tmp, tasks, spec_members, combine))
    return artifacts


def requirements() -> list[str]:
    """What serving with a fresh environment installs: the project's declared requirements (its ranges, not
    this venv's builds); `--env-manager local` uses the current environment instead."""
    from importlib.metadata import PackageNotFoundError, requires
    try:
        declared = requires("mtl") or []
    except PackageNotFoundError:  # running from a source tree that is not installed
        declared = []
    return [r for r in declared if ";" not in r] or ["torch", "torchvision", "torchmetrics", "mlflow", "pandas",
                                                      "pillow", "torchjd"]


def log_model(run_id: str, name: str, members: dict[str, dict], tasks, combine: dict, example: Path,
              metrics: dict[str, tuple[float, int]] | None = None, dataset=None, params: dict | None = None):
    """Log a logged model (pyfunc) on the finished run `run_id` with its signature, task spec and an input
    example; link `metrics` (name -> (value, step): val scores at their epochs) and `dataset` to it. The
    run's status and end time are put back as they were. Returns the ModelInfo."""
    client = mlflow.MlflowClient()
    before = client.get_run(run_id).info
    with tempfile.TemporaryDirectory(prefix="mtl-model-") as tmp:
        artifacts = package(Path(tmp), members, tasks, combine)
        loaded = HydraNetModel()
        loaded.load_context(type("Ctx", (), {"artifacts": artifacts})())  # the signature from a real prediction
        example_df = pd.DataFrame({"image": [example_image(Path(example))]})  # embedded: no path of this machine
        signature = infer_signature(example_df, loaded.predict(None, example_df))
        try:
            with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow's advice on pip inference and type hints
                info = mlflow.pyfunc.log_model(
                    name=name, python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts=artifacts,
                    code_paths=[str(Path(__file__).parents[1])],  # the mtl package: loads where mtl is not installed
                    signature=signature, input_example=example_df, pip_requirements=requirements(), params=params,
                    model_type="hydranet")
                for key, (value, step) in (metrics or {}).items():
                    mlflow.log_metric(key, value, step=step, model_id=info.model_id, dataset=dataset)
        finally:  # logging a model reopens the run: it keeps the status and end time training gave it
            if before.status in ("FINISHED", "FAILED", "KILLED"):
                client.set_terminated(run_id, before.status, end_time=before.end_time)
    return info
