"""Images to per-task outputs for evaluation: saved checkpoints, ensembles and captions batch images through
`outputs` here. The served MLflow model (mtl/serve/pyfunc.py) has its own loop, which runs each backbone
stage its members share once (mtl/model/prefix.py `shared_forward`), but decodes with the same
`mtl.data.dataset.decode`, normalises with the same `mtl.data.batches.normalize` and batches by the same
`BATCH`, so its labels equal `make predict`'s (tested).

`CheckpointCache` gives a tracked run's per-split outputs (a study's members): val from what training
saved beside its checkpoints, other splits by inference, each checkpoint run at most once (the run's files
are read through mtl/train/artifacts.py). Nothing here reads a label.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mtl.data.batches import normalize
from mtl.data.dataset import cached_images, decode
from mtl.tasks import Task
from mtl.train.artifacts import TrialArtifacts
from mtl.train.checkpoints import model_from_checkpoint

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
    """Per-split outputs per (run, checkpoint file), each run's files read through its TrialArtifacts and each
    checkpoint run at most once."""

    def __init__(self, client, manifest, split: str):
        self.client, self.manifest, self.split = client, manifest, split
        self.outputs: dict[tuple[str, str], dict] = {}
        self.runs: dict[str, TrialArtifacts] = {}

    def artifacts(self, run_id: str) -> TrialArtifacts:
        if run_id not in self.runs:
            self.runs[run_id] = TrialArtifacts(self.client, run_id)
        return self.runs[run_id]

    def best_file(self, run_id: str, task: str) -> str:
        return self.artifacts(run_id).best_file(task)

    def _saved_val(self, run_id: str, task: str) -> torch.Tensor | None:
        """The val outputs training kept for the task's best epoch, if they match this manifest's val split."""
        if self.split != "val":
            return None
        saved = self.artifacts(run_id).val_outputs()
        if saved.get("images") != [str(p) for p in self.manifest.rows("val")["image"]]:
            return None
        return saved.get("outputs", {}).get(task)

    def task_output(self, run_id: str, task: str) -> torch.Tensor:
        """The run's best-epoch checkpoint for `task`, its output for `task`."""
        saved = self._saved_val(run_id, task)
        if saved is not None:
            return saved
        key = (run_id, self.best_file(run_id, task))
        if key not in self.outputs:
            self.outputs[key] = split_outputs(self.artifacts(run_id).checkpoint(key[1]), self.manifest, self.split)
        return self.outputs[key][task]

    def member(self, run_id: str, tasks: list[Task]) -> dict[str, torch.Tensor]:
        return {t.name: self.task_output(run_id, t.name) for t in tasks}
