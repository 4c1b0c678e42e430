"""Checkpoints: save, load and restore them, and warm starts (where a backbone's weights come from).

A run writes one file per distinct best epoch (`epoch-<e>.pt`: a plain dict with the model's weights,
the criterion's state, the config and the tasks) and `index.json` naming each task's best file and the
last. Files load with `weights_only=True` (no pickled code runs); anything that does not fit is one
clear line naming the file.

Warm starts (`TrainConfig.init`) take a local file or directory or an MLflow URI (`models:/<name>@<alias>`,
`runs:/<id>/<path>`):
- an mtl checkpoint (`epoch-<e>.pt`, or a checkpoint directory with `index.json`: its last epoch):
  its `backbone.*` weights;
- a folder of an mtl MLflow model (what `models:/` downloads: `artifacts/spec.json`, its members and the
  backbone base they were stored against, written by mtl/serve/pyfunc.py);
- a torchvision-compatible state dict (e.g. ImageNet weights copied in by hand): everything but the
  classifier (`fc`, `classifier`, `head(s)`).
Only the backbone is loaded: trunk and heads start fresh, as in the seeds' fine-tuning of an
ImageNet ResNet50 with new heads.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch

from mtl.errors import UserError
from mtl.model.hydranet import HydraNet, build_model
from mtl.tasks import Task
from mtl.train.artifacts import (
    CHECKPOINT_KEYS,
    INDEX,
    MODEL_DIR,
    epoch_file,
    is_checkpoint_dir,
    is_model_package,
    load_checkpoint,
    read_spec,
    write_index,
)
from mtl.train.config import TrainConfig

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "heads.", "head.")
BACKBONE_CACHE_SIZE = 4  # warm-start backbones kept per process (a resnet18's is 43 MB)
_BACKBONES: OrderedDict[str, dict] = OrderedDict()  # resolved source -> backbone state, least recently used first


def clear_cache() -> None:
    """Forget the warm-start backbones this process loaded."""
    _BACKBONES.clear()


# ------------------------------------------------------------------------------------------------
# save, load, restore
# ------------------------------------------------------------------------------------------------
def save_checkpoints(out_dir: Path, cfg, tasks, states: dict, best: dict, last_state: dict, last_epoch: int,
                     half: frozenset[str] = frozenset()) -> Path:
    """One file per distinct epoch (`epoch-<e>.pt`, plain dicts with the config) and `index.json`
    mapping each task to its best epoch's file, plus `last`. Tasks that peak together share a file.
    With a warm start (`init`) from a file or a run's checkpoint, backbone weights still equal to the base
    are not stored again: the checkpoint names its base in its config and `restore` puts them back (a
    frozen resnet18 backbone is 43 MB a file that 40 trials would otherwise each write several times).
    A registry model as base is stored whole: its versions are replaced and deleted.
    `half`: the names of weights stored in float16 (a study trial's parameters: half the bytes, outputs
    within a tested tolerance); buffers (BatchNorm's running statistics), the criterion's state and any
    value float16 cannot hold stay float32. Loading casts them back (`load_state_dict` copies into float32)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = last_state.pop("progress", None)
    states = {**states, last_epoch: {**(states.get(last_epoch) or last_state),
                                     **({"progress": progress} if progress else {})}}
    try:
        base = backbone_state(cfg.init) if immutable(cfg.init) else {}
    except UserError:  # the base moved since training started: store every weight rather than lose them
        base = {}
    for epoch, state in states.items():
        kept = {k: _stored(v, k in half) for k, v in state["model"].items()
                if not (k.startswith("backbone.") and k[9:] in base and torch.equal(v, base[k[9:]]))}
        extra = {"progress": state["progress"]} if "progress" in state else {}
        tmp = out_dir / (epoch_file(epoch) + ".tmp")  # written whole, then renamed: a kill never leaves half a file
        torch.save({"model": kept, "criterion": state["criterion"], "config": cfg.to_dict(),
                    "tasks": [t.to_dict() for t in tasks], "epoch": epoch, **extra}, tmp)
        tmp.replace(out_dir / epoch_file(epoch))
    write_index(out_dir, best, last_epoch)
    for old in out_dir.glob("epoch-*.pt"):  # a run rewritten after each epoch: epochs no longer best or last
        if old.name not in {epoch_file(e) for e in states}:
            old.unlink()
    return out_dir


def _stored(value: torch.Tensor, half: bool) -> torch.Tensor:
    """`value` as stored: float16 where asked and it fits (finite where the float32 value is), else as is."""
    if not half or value.dtype != torch.float32:
        return value
    h = value.half()
    return h if torch.equal(torch.isfinite(h), torch.isfinite(value)) else value


def as_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights stored in float16 read back as float32 (what the model holds), so comparisons stay exact."""
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def restore(model: HydraNet, ckpt: dict, init: str | None) -> None:
    """Load a checkpoint's weights; backbone weights it left out come from its warm-start base `init`."""
    state = ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing and init and all(k.startswith("backbone.") for k in missing) and all(k in own for k in state):
        load_backbone(model, init)
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state)


def model_from_checkpoint(ckpt: dict) -> tuple[HydraNet, TrainConfig, list[Task]]:
    """The model a checkpoint describes, in eval mode; a config, task list or state that does not fit is
    one clear line naming the file."""
    source = ckpt.get("source", "checkpoint")
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
        tasks = [Task.from_dict(t) for t in ckpt["tasks"]]
    except (TypeError, ValueError, AttributeError, UserError) as e:
        raise UserError(f"{source}: its config or tasks do not fit this version of mtl ({e})") from None
    model = build_model(cfg.replace(weights=None), tasks)
    try:
        restore(model, ckpt, cfg.init)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise UserError(f"{source}: its weights do not fit the model its config describes ({first})") from None
    return model.eval(), cfg, tasks


def checkpoint_from_model(local: Path, member: str = "m0", materialize: bool = False) -> dict:
    """The checkpoint dict of one member of a downloaded mtl model (a `models:/` folder), its warm-start
    backbone taken from the model's own copy; `materialize`: that backbone copied into the checkpoint's
    weights now (init cleared), so the folder may be deleted once this returns."""
    root = local / MODEL_DIR
    spec = read_spec(local)
    if member not in spec["members"]:
        raise UserError(f"{local}: an mtl model of {len(spec['members'])} members (an ensemble), not one checkpoint")
    ckpt = load_checkpoint(root / f"{member}.pt")
    base = spec["members"][member].get("base")
    if base:
        ckpt["config"] = {**ckpt["config"], "init": str(root / f"{base}.pt")}
        if materialize:
            filled = {f"backbone.{k}": v for k, v in _read_backbone_at(str(root / f"{base}.pt"), root / f"{base}.pt").items()}
            ckpt["model"] = {**filled, **ckpt["model"]}
            ckpt["config"] = {**ckpt["config"], "init": None}
    return ckpt


# ------------------------------------------------------------------------------------------------
# warm starts
# ------------------------------------------------------------------------------------------------
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


@contextlib.contextmanager
def local_copy(source: str):
    """A local path for `source` while the block runs. MLflow URIs (models:/, runs:/) are downloaded into a
    temporary directory that is removed afterwards (what is read stays in memory: no residue per process)."""
    if source.startswith(("models:/", "runs:/")):
        import mlflow
        with tempfile.TemporaryDirectory(prefix="mtl-init-") as tmp:
            try:
                path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
            except Exception as e:
                raise UserError(f"init={source}: cannot download ({type(e).__name__}: {str(e)[:120]})") from None
            yield path
        return
    path = Path(source)
    if not path.exists():
        raise UserError(f"init={source}: no such file or directory")
    yield path


def backbone_state(source: str) -> dict[str, torch.Tensor]:
    """The backbone weights behind `source` (cached per process)."""
    if source in _BACKBONES:
        _BACKBONES.move_to_end(source)
        return _BACKBONES[source]
    state = _read_backbone(source)
    _BACKBONES[source] = state
    while len(_BACKBONES) > BACKBONE_CACHE_SIZE:
        _BACKBONES.popitem(last=False)
    return state


def _read_backbone(source: str) -> dict[str, torch.Tensor]:
    with local_copy(source) as path:
        return _read_backbone_at(source, path)


def _read_backbone_at(source: str, path: Path) -> dict[str, torch.Tensor]:
    if is_model_package(path):  # a registered mtl model (models:/...)
        ckpt = checkpoint_from_model(path)
        state = {k[len("backbone."):]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
        base = ckpt["config"].get("init")
        return {**(backbone_state(base) if base else {}), **as_float32(state)}
    if path.is_dir() and not is_checkpoint_dir(path):
        files = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
        if len(files) != 1:
            raise UserError(f"init={source}: a directory needs {INDEX} or exactly one .pt file")
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
    return as_float32(state)


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
