"""Resume: everything a run needs to continue as if it had never stopped (`train --from`, `fit(resume=)`):
optimizer and schedule, the RNGs, the per-task bests and the history, kept on a resumable run's last
checkpoint (mtl/train/checkpoints.py writes it, `progress`)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mtl.errors import UserError
from mtl.train.artifacts import epoch_file, load_checkpoint


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {})}


def progress_state(optimizer, scheduler, best, generators, history: list[dict]) -> dict:
    """Optimizer and schedule, the RNGs (global, and the batch order's and augmentation's own), the per-task
    bests and the history so far: what `restore_progress` puts back."""
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
            "rng": _rng_state(), "generators": [g.get_state() for g in generators], "history": list(history),
            "best": best.best, "best_mean": best.best_mean, "since_best": best.since_best, "outputs": best.outputs}


def restore_progress(ckpt: dict, optimizer, scheduler, best, generators) -> list[dict]:
    """Put a resumable checkpoint's progress back (its best epochs' states read from the files beside it);
    returns the history so far. A checkpoint without it is one line."""
    p = ckpt.get("progress")
    if not p:
        raise UserError(f"{ckpt.get('source', 'checkpoint')}: not resumable (no optimizer, schedule or RNG state: "
                        f"a study trial's, or written by an older mtl); --init starts a new run from its weights")
    optimizer.load_state_dict(p["optimizer"])
    if scheduler is not None and p["scheduler"] is not None:
        scheduler.load_state_dict(p["scheduler"])
    here = Path(ckpt["source"]).parent
    for b in p["best"].values():
        if b["epoch"] not in best.states:
            other = ckpt if b["epoch"] == ckpt["epoch"] else load_checkpoint(here / epoch_file(b["epoch"]))
            best.states[b["epoch"]] = {"model": other["model"], "criterion": other["criterion"]}
    best.best, best.best_mean, best.since_best, best.outputs = p["best"], p["best_mean"], p["since_best"], p["outputs"]
    torch.set_rng_state(p["rng"]["torch"])
    random.setstate(_tuples(p["rng"]["python"]))
    n = p["rng"]["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    if "cuda" in p["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(p["rng"]["cuda"])
    for g, state in zip(generators, p["generators"]):
        g.set_state(state)
    return list(p["history"])


def _tuples(x):
    """random.setstate wants the tuples it gave (a checkpoint may hand lists back)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
