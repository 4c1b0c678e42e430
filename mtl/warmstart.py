"""Warm starts: a backbone's weights from a file, a run's checkpoint or a registered model (`init=`).

`init` takes a local file or directory or an MLflow URI (`models:/<name>@<alias>`, `runs:/<id>/<path>`):
- an mtl checkpoint (`epoch-<e>.pt`, or a checkpoint directory with `index.json`: its last epoch):
  its `backbone.*` weights;
- a torchvision-compatible state dict (e.g. ImageNet weights copied in by hand): everything but the
  classifier (`fc`, `classifier`, `head(s)`).
Only the backbone is loaded: trunk and heads start fresh, as in the seeds' fine-tuning of an
ImageNet ResNet50 with new heads. Anything that does not fit is one clear line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mtl.errors import UserError

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "heads.", "head.")
_STATES: dict[str, dict] = {}  # resolved source -> backbone state, shared by the trials of a process


def canonical(source: str | None) -> str | None:
    """A local path made absolute (so a checkpoint that names its base still finds it from another
    working directory); a registry alias (`models:/<name>@<alias>`) pinned to the version it names now,
    so the config records which weights were loaded; other MLflow URIs as they are."""
    if not source or source.startswith("runs:/"):
        return source
    if source.startswith("models:/"):
        name, at, alias = source[len("models:/"):].partition("@")
        if not at:
            return source
        try:
            import mlflow
            return f"models:/{name}/{mlflow.MlflowClient().get_model_version_by_alias(name, alias).version}"
        except Exception:  # unknown here: loading it says so in one line
            return source
    return str(Path(source).resolve())


def immutable(source: str | None) -> bool:
    """Whether `source` names weights that stay as they are: a checkpoint may then leave out the backbone
    weights equal to it. Registry models are not (a replaced version is deleted with its files)."""
    return bool(source) and not source.startswith("models:/")


def resolve(source: str) -> Path:
    """A local path for `source`, downloading MLflow URIs (models:/, runs:/) first."""
    if source.startswith(("models:/", "runs:/")):
        import mlflow
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
        except Exception as e:
            raise UserError(f"init={source}: cannot download ({type(e).__name__}: {str(e)[:120]})") from None
    path = Path(source)
    if not path.exists():
        raise UserError(f"init={source}: no such file or directory")
    return path


def backbone_state(source: str) -> dict[str, torch.Tensor]:
    """The backbone weights behind `source` (cached per process)."""
    if source in _STATES:
        return _STATES[source]
    from mtl.train import CHECKPOINT_KEYS, load_checkpoint
    path = resolve(source)
    if path.is_dir() and (path / "artifacts" / "spec.json").is_file():  # a registered mtl model (models:/...)
        from mtl.mlmodel import checkpoint_from_model
        ckpt = checkpoint_from_model(path)
        state = {k[len("backbone."):]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
        base = ckpt["config"].get("init")
        _STATES[source] = {**(backbone_state(base) if base else {}), **state}
        return _STATES[source]
    if path.is_dir() and not (path / "index.json").is_file():
        files = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
        if len(files) != 1:
            raise UserError(f"init={source}: a directory needs index.json or exactly one .pt file")
        path = files[0]
    if path.is_dir():
        obj = load_checkpoint(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"init={source}: not a readable state dict ({type(e).__name__})") from None
    if isinstance(obj, dict) and all(k in obj for k in CHECKPOINT_KEYS):  # an mtl checkpoint
        state = {k[len("backbone."):]: v for k, v in obj["model"].items() if k.startswith("backbone.")}
        base = (obj.get("config") or {}).get("init")
        if base and base != source:  # it stored only what differs from its own warm-start base
            state = {**backbone_state(base), **state}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = {k: v for k, v in obj.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    else:
        raise UserError(f"init={source}: neither an mtl checkpoint nor a state dict of tensors")
    if not state:
        raise UserError(f"init={source}: holds no backbone weights")
    _STATES[source] = state
    return state


def load_backbone(model, source: str) -> None:
    """Copy `source`'s backbone weights into `model.backbone`; every backbone weight must be matched."""
    state = backbone_state(source)
    try:
        result = model.backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that does not fit (another backbone's weights)
        raise UserError(f"init={source}: does not fit this backbone ({str(e).strip().splitlines()[-1][:160]})") from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        what = (f"{len(missing)} weight(s) missing (e.g. {missing[0]})" if missing else
                f"{len(unexpected)} unknown weight(s) (e.g. {unexpected[0]})")
        raise UserError(f"init={source}: does not fit this backbone: {what}")
