"""One path from images to per-task outputs: evaluation of saved checkpoints, ensembles, captions and
the served MLflow model all decode, normalise and batch images here, so they see the same numbers.

`CheckpointCache` gives a tracked run's per-split outputs (a study's members): val from what training
saved beside its checkpoints, other splits by inference, each checkpoint run at most once. Nothing
here reads a label.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from mtl.data.batches import normalize
from mtl.data.dataset import cached_images, decode
from mtl.tasks import Task
from mtl.train.checkpoints import VAL_OUTPUTS, load_checkpoint, model_from_checkpoint

BATCH = 64  # images per forward pass: a large request never stacks every image at once


@torch.no_grad()
def outputs(model, images: torch.Tensor, batch_size: int = BATCH) -> dict[str, torch.Tensor]:
    """A model's head outputs (eval mode) on uint8 images (N, 3, S, S), in batches, concatenated."""
    model.eval()
    outs: dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        for k, v in model(normalize(images[i:i + batch_size])).items():
            outs.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


def image_outputs(model, image_size: int, paths: list[Path], batch_size: int = BATCH) -> dict[str, torch.Tensor]:
    """Outputs on image files (decoded a batch at a time, not cached: a served model's requests)."""
    outs: dict[str, list] = {}
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([decode(p, image_size) for p in paths[i:i + batch_size]])
        for k, v in outputs(model, batch, batch_size).items():
            outs.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


def split_outputs(ckpt: dict, manifest, split: str) -> dict[str, torch.Tensor]:
    """A checkpoint's outputs on every image of a split, in manifest order (images only: no labels read)."""
    model, cfg, _ = model_from_checkpoint(ckpt)
    return outputs(model, cached_images(manifest.image_paths(split), cfg.image_size))


class CheckpointCache:
    """Per-split outputs per (run, checkpoint file), each checkpoint downloaded and run at most once."""

    def __init__(self, client, manifest, split: str):
        self.client, self.manifest, self.split = client, manifest, split
        self.outputs: dict[tuple[str, str], dict] = {}
        self.index: dict[str, dict] = {}

    def _download(self, run_id: str, path: str) -> str:
        """One artifact into a temporary directory that is gone once it has been read (no residue)."""
        with tempfile.TemporaryDirectory(prefix="mtl-cache-") as tmp:
            local = Path(self.client.download_artifacts(run_id, path, tmp))
            if local.suffix == ".json":
                return local.read_text()
            return torch.load(local, map_location="cpu", weights_only=True) if path.endswith(VAL_OUTPUTS) \
                else load_checkpoint(local)

    def best_file(self, run_id: str, task: str) -> str:
        if run_id not in self.index:
            self.index[run_id] = json.loads(self._download(run_id, "checkpoints/index.json"))
        return self.index[run_id]["best"][task]["file"]

    def _saved_val(self, run_id: str, task: str) -> torch.Tensor | None:
        """The val outputs training kept for the task's best epoch, if they match this manifest's val split."""
        if self.split != "val":
            return None
        key = (run_id, VAL_OUTPUTS)
        if key not in self.outputs:
            try:
                saved = self._download(run_id, f"checkpoints/{VAL_OUTPUTS}")
            except Exception:  # older runs have none: fall back to inference
                saved = {}
            same = saved.get("images") == [str(p) for p in self.manifest.rows("val")["image"]]
            self.outputs[key] = saved.get("outputs", {}) if same else {}
        return self.outputs[key].get(task)

    def task_output(self, run_id: str, task: str) -> torch.Tensor:
        """The run's best-epoch checkpoint for `task`, its output for `task`."""
        saved = self._saved_val(run_id, task)
        if saved is not None:
            return saved
        key = (run_id, self.best_file(run_id, task))
        if key not in self.outputs:
            self.outputs[key] = split_outputs(self._download(run_id, f"checkpoints/{key[1]}"), self.manifest, self.split)
        return self.outputs[key][task]

    def member(self, run_id: str, tasks: list[Task]) -> dict[str, torch.Tensor]:
        return {t.name: self.task_output(run_id, t.name) for t in tasks}
