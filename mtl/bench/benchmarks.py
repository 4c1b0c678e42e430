"""Performance ratios measured in one process on the same synthetic batch (`python -m mtl bench` writes them).

Every timing figure is the median of 5 alternating rounds (each round times both sides, the order
swapped every round, each side the median of 3 calls after warm-up) with the min-max spread of the
per-round ratios in `spread`, so it says how close our training step is to what this machine can do,
not how fast the machine is, nor how noisy it was that minute. Written to
`reports/bench.json` with the raw images/s behind each ratio.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mtl.bench.serving import serving_ratios
from mtl.data.batches import BatchAugment, TensorBatches
from mtl.data.dataset import MultiTaskDataset, cached_images
from mtl.data.manifest import load_manifest
from mtl.data.render import FGO_TASKS
from mtl.methods import make_criterion
from mtl.model.hydranet import HydraNet, make_backbone
from mtl.model.losses import task_losses
from mtl.tasks import Task
from mtl.track import tracking
from mtl.train.config import TrainConfig
from mtl.train.loop import fit, shared_params, to_device
from mtl.tune.early_stop import epoch_budget
from mtl.tune.storage import default_storage, make_storage

TARGETS = {"step_vs_bare": ">= 0.90", "shared_vs_per_head_backbone": ">= 2.8", "epoch_vs_step": ">= 0.95",
           "frozen_prefix_vs_full": ">= 5", "early_stopped_epoch_fraction": "report (default study)",
           "cached_vs_decode": "report", "heads_8_vs_1": "<= 1.10", "tracking_overhead_pct": "<= 2",
           "jacobian_step_vs_fixed": "report (aim <= 1.5)",
           "gflops_vs_matmul": "report", "amp_vs_fp32": "report (CUDA only)",
           "ensemble_vs_single": ">= 0.5", "composite_vs_single": ">= 0.8"}


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_rounds(fa, fb, rounds: int, inner: int = 1, warmup: int = 1) -> dict:
    """Time a and b in `rounds` alternating rounds (which goes first swaps each round, so drift hits both
    alike), each time the median of `inner` calls. Returns seconds per call of each (medians over rounds)
    and b/a per round: its median (the figure) and min-max spread."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for r in range(rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            (ta if which == 0 else tb).append(median_time(fa if which == 0 else fb, inner, warmup=0))
    per = [b / a for a, b in zip(ta, tb)]
    return {"a": statistics.median(ta), "b": statistics.median(tb), "ratio": statistics.median(per),
            "spread": [min(per), max(per)]}


def fgo_tasks() -> list[Task]:
    return [Task(n, kind, tuple(classes)) for n, (kind, classes) in FGO_TASKS.items()]


def random_targets(tasks, b, device, missing=0.1):
    g = torch.Generator().manual_seed(0)
    tg = {t.name: t.kind_impl.random_targets(t, b, g) for t in tasks}
    mk = {t.name: torch.rand(b, generator=g) > missing for t in tasks}
    return {k: v.to(device) for k, v in tg.items()}, {k: v.to(device) for k, v in mk.items()}


def criterion(name: str, tasks, device, model=None):
    return make_criterion(TrainConfig(method=name), tasks, shared_params(model) if model else None).to(device)


def hydra_step(model, crit, opt, x, tg, mk, tasks=None):
    """One training step as `train_one_epoch` takes it: shared features once, the criterion's backward."""
    def step():
        features = model.features(x)
        opt.zero_grad(set_to_none=True)
        crit.backward(features, model.heads_forward, tg, mk)
        opt.step()
    return step


def summed_step(model, crit, opt, x, tg, mk, tasks):
    """A step on the weighted sum of the model's outputs' losses (for models without a features/heads split)."""
    def step():
        total = crit(task_losses(tasks, model(x), tg, mk))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return step


def bare_step(backbone_name, x, y, device):
    net, feat = make_backbone(backbone_name)
    head = torch.nn.Linear(feat, 10)
    net = torch.nn.Sequential(net, head).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


class PerHeadBackbone(torch.nn.Module):
    """The UTKFace write-up's form: the backbone runs once per head (three times the work for three heads)."""

    def __init__(self, inner: HydraNet):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {name: self._one(x, name) for name in self.inner.heads}

    def _one(self, x, name):
        h = self.inner.features(x)
        t = self.inner.tasks[name]
        return t.kind_impl.head_output(t, self.inner.heads[name](h))


def run(backbone="resnet18", image_size=64, batch_size=32, quick=False, manifest="data_manifests/fgo_synth.csv",
        study: str | None = None):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rounds, reps = (2, 1) if quick else (5, 3)  # every ratio: the median of `rounds` alternating rounds
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    res: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                            f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}",
                 "backbone": backbone, "image_size": image_size, "batch_size": batch_size, "torch": torch.__version__}
    ips = lambda t: batch_size / t  # noqa: E731

    # step_vs_bare: 5 heads, masked losses, uncertainty weighting vs backbone + one CE head
    tasks = fgo_tasks()
    tg, mk = random_targets(tasks, batch_size, device)
    model = HydraNet(tasks, backbone).to(device).train()
    w = criterion("uncertainty", tasks, device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(w.parameters()), 1e-3)
    spread = res["spread"] = {}  # key -> [min, max] of the per-round ratios; the key holds their median

    def figure(key, fa, fb, scale=1.0):
        r = paired_rounds(fa, fb, rounds, reps)
        res[key], spread[key] = scale * r["ratio"], [scale * v for v in r["spread"]]
        return r["a"], r["b"]
    y = torch.randint(0, 10, (batch_size,), device=device)
    t_ours, t_bare = figure("step_vs_bare", hydra_step(model, w, opt, x, tg, mk, tasks), bare_step(backbone, x, y, device))
    res["raw"] = {"ours_img_s": ips(t_ours), "bare_img_s": ips(t_bare)}

    # shared_vs_per_head_backbone: 3 heads (UTK schema), shared features vs backbone once per head
    utk = [Task("age", "regression"), Task("gender", "binary", ("Male", "Female")),
           Task("race", "multiclass", ("a", "b", "c", "d", "e"))]
    tg3, mk3 = random_targets(utk, batch_size, device, missing=0.0)
    m3 = HydraNet(utk, backbone).to(device).train()
    w3 = criterion("fixed", utk, device)
    o3 = torch.optim.AdamW(m3.parameters(), 1e-3)
    per_head = PerHeadBackbone(m3)
    t_shared, t_per_head = figure("shared_vs_per_head_backbone", summed_step(m3, w3, o3, x, tg3, mk3, utk),
                                  summed_step(per_head, w3, o3, x, tg3, mk3, utk))
    res["raw"].update(shared_3head_img_s=ips(t_shared), per_head_backbone_img_s=ips(t_per_head))

    # heads_8_vs_1
    def heads(n):
        ts = [Task(f"t{i}", "multiclass", tuple("abcdefgh")) for i in range(n)]
        tgn, mkn = random_targets(ts, batch_size, device)
        mn = HydraNet(ts, backbone).to(device).train()
        wn = criterion("fixed", ts, device)
        return hydra_step(mn, wn, torch.optim.AdamW(mn.parameters(), 1e-3), x, tgn, mkn, ts)
    t1, t8 = figure("heads_8_vs_1", heads(1), heads(8))
    res["raw"].update(heads_1_img_s=ips(t1), heads_8_img_s=ips(t8))

    # jacobian_step_vs_fixed: a torchjd UPGrad step (Jacobian on the shared features) vs the plain sum, 5 tasks
    def method_step(name):
        torch.manual_seed(0)
        mj = HydraNet(tasks, backbone).to(device).train()
        cj = criterion(name, tasks, device, mj)
        return hydra_step(mj, cj, torch.optim.AdamW(mj.parameters(), 1e-3), x, tg, mk)
    t_fixed, t_upgrad = figure("jacobian_step_vs_fixed", method_step("fixed"), method_step("upgrad"))
    res["raw"].update(fixed_img_s=ips(t_fixed), upgrad_img_s=ips(t_upgrad))

    # gflops_vs_matmul: achieved GFLOP/s of the step over those of a large matmul, per round
    from torch.utils.flop_counter import FlopCounterMode
    step = hydra_step(model, w, opt, x, tg, mk, tasks)
    with FlopCounterMode(display=False) as fc:
        step()
    flops_step = fc.get_total_flops()
    n = 2048 if not quick else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t_step, t_mm = figure("gflops_vs_matmul", step, lambda: a @ b, scale=flops_step / (2 * n ** 3))
    res["raw"].update(step_gflops=flops_step / t_step / 1e9, matmul_gflops=2 * n ** 3 / t_mm / 1e9)

    # amp_vs_fp32 (CUDA only)
    if device.type == "cuda":
        mc = HydraNet(tasks, backbone).to(device).to(memory_format=torch.channels_last).train()
        wc = criterion("uncertainty", tasks, device)
        oc = torch.optim.AdamW(list(mc.parameters()) + list(wc.parameters()), 1e-3)
        xc = x.to(memory_format=torch.channels_last)
        inner = hydra_step(mc, wc, oc, xc, tg, mk, tasks)

        def amp_step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                inner()
        t_amp, _ = figure("amp_vs_fp32", amp_step, inner)
        res["raw"]["amp_img_s"] = ips(t_amp)
    else:
        res["amp_vs_fp32"] = None

    res.update(data_ratios(model, w, opt, tasks, manifest, image_size, batch_size, device, quick))
    res.update(frozen_prefix(manifest, image_size, batch_size, quick))
    study = study or "fgo_regularization"  # the default study's models, where it has run
    res.update(early_stopped_epochs(study))
    res.update(serving_ratios(study, repeats=2 if quick else 5))  # the study's registered models (default study)
    res["study"] = study
    for extra in ("spread_data", "spread_frozen"):
        spread.update(res.pop(extra))
    for key in ("ensemble_vs_single", "composite_vs_single"):
        if f"{key}_spread" in res.get("raw_serving", {}):
            spread[key] = res["raw_serving"][f"{key}_spread"]
    res["tracking_overhead_pct"], spread["tracking_overhead_pct"], res["raw"]["trial_s_untracked"], \
        res["raw"]["trial_s_tracked"] = tracking_overhead(manifest, quick)
    res["rounds"] = rounds
    return res


def data_ratios(model, w, opt, tasks, manifest_path, image_size, batch_size, device, quick):
    """epoch_vs_step (an epoch as `fit` feeds it — in-memory batches, batched augmentation on the device —
    vs the same steps on prepared tensors) and cached_vs_decode (decode-once cache vs PIL every time)."""
    m = load_manifest(manifest_path)
    targets, masks = m.targets("train")
    images = cached_images(m.image_paths("train"), image_size)
    n_batches = 4 if quick else len(images) // batch_size
    loader = TensorBatches(images[:n_batches * batch_size], {k: torch.from_numpy(v) for k, v in targets.items()},
                           {k: torch.from_numpy(v) for k, v in masks.items()}, batch_size, shuffle=True, drop_last=True)
    augment = BatchAugment(0)
    batches = [(augment(xb.to(device)), *to_device((xb, tb, mb), device)[1:]) for xb, tb, mb in loader]

    def epoch_loader():
        for b in loader:
            xb, tb, mb = to_device(b, device)
            hydra_step(model, w, opt, augment(xb), tb, mb, tasks)()

    def epoch_memory():
        for xb, tb, mb in batches:
            hydra_step(model, w, opt, xb, tb, mb, tasks)()
    rounds = 2 if quick else 5
    ld = paired_rounds(epoch_loader, epoch_memory, rounds)  # memory/loader seconds = loader's speed share
    t_loader, t_mem = ld["a"], ld["b"]

    ds = MultiTaskDataset(m, "train", image_size)
    dec = MultiTaskDataset(m, "train", image_size, cache=False)  # the seeds' form: PIL decode every epoch

    def iterate(d):
        for i, _ in enumerate(DataLoader(d, batch_size, drop_last=True)):
            if i >= n_batches:
                break
    cd = paired_rounds(lambda: iterate(ds), lambda: iterate(dec), rounds)
    t_cached, t_decode = cd["a"], cd["b"]
    imgs = n_batches * batch_size
    return {"epoch_vs_step": ld["ratio"], "cached_vs_decode": cd["ratio"],
            "spread_data": {"epoch_vs_step": ld["spread"], "cached_vs_decode": cd["spread"]},
            "raw_data": {"epoch_loader_img_s": imgs / t_loader, "epoch_memory_img_s": imgs / t_mem,
                         "cached_img_s": imgs / t_cached, "decode_img_s": imgs / t_decode}}


def frozen_prefix(manifest_path: str, image_size: int, batch_size: int, quick: bool) -> dict:
    """frozen_prefix_vs_full: a trial epoch (train + val) fine-tuning everything with augmentation, divided
    by one with the backbone frozen and its outputs cached (what the default study's trials do)."""
    m = load_manifest(manifest_path)
    full = TrainConfig(image_size=image_size, batch_size=batch_size, epochs=1)
    cached = full.replace(freeze="all", trunk_dims=[256], augment=False)
    fit(cached, m)  # fills the image and feature caches, as the study's first trial does
    r = paired_rounds(lambda: fit(cached, m), lambda: fit(full, m), 2 if quick else 5, warmup=0)
    return {"frozen_prefix_vs_full": r["ratio"], "spread_frozen": {"frozen_prefix_vs_full": r["spread"]},
            "raw_frozen": {"full_epoch_s": r["b"], "frozen_prefix_epoch_s": r["a"]}}


def early_stopped_epochs(study: str = "fgo_regularization") -> dict:
    """early_stopped_epoch_fraction of the default study, if it has been run here: epochs not run (early stopping
    across trials, and patience) divided by the epochs the finished trials were budgeted."""

    path = Path(default_storage(study))
    if not path.is_file():
        return {"early_stopped_epoch_fraction": None}
    s = optuna.load_study(study_name=study, storage=make_storage(str(path)))
    raw = epoch_budget(s.trials)
    return {"early_stopped_epoch_fraction": raw.pop("fraction_not_run"), "raw_early_stop": raw}


def tracking_overhead(manifest_path: str, quick: bool) -> tuple[float, list[float], float, float]:
    """A short real trial with MLflow logging (per-epoch batch, params, dataset, checkpoint artifacts) vs none."""
    import os

    m = load_manifest(manifest_path)
    cfg = TrainConfig(image_size=32, epochs=1 if quick else 3, batch_size=32)
    fit(cfg, m)  # warm-up: caches, allocator
    plain, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        try:
            client = tracking.get_client()
            exp = tracking.ensure_experiment(client, "bench")
            def untracked(i):
                t0 = time.perf_counter()
                fit(cfg, m, Path(tmp) / f"a{i}")
                plain.append(time.perf_counter() - t0)

            def logged(i):
                t0 = time.perf_counter()
                with tracking.RunLogger(client, exp, "bench", system_metrics=True) as run:  # as a study trial logs
                    run.log_params(tracking.flatten_config(cfg))
                    run.log_dataset(m)
                    with run.artifact_dir("checkpoints") as ckpt_dir:
                        fit(cfg, m, ckpt_dir, on_epoch=run.log_epoch)
                tracked.append(time.perf_counter() - t0)

            for i in range(2 if quick else 12):  # alternate, and swap which goes first, so drift hits both alike
                for side in ((untracked, logged) if i % 2 == 0 else (logged, untracked)):
                    side(i)
        finally:
            if old is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old
    # per pair (each ran back to back) the overhead in per cent: far less noisy than the difference of the
    # medians on a machine whose speed drifts by several per cent between runs; the median and its spread
    pct = [100.0 * (b - a) / a for a, b in zip(plain, tracked)]
    return statistics.median(pct), [min(pct), max(pct)], statistics.median(plain), statistics.median(tracked)
