"""Figures: the Pareto front, the front members' val curves, the study's hypervolume over trials,
per-task parameter importances, and the captioned gallery of predictions. Each returns a matplotlib
figure (or writes the gallery's PNG); the commands save them and log them on the parent run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
from optuna.trial import TrialState
from PIL import Image

from mtl.data.images import to_rgb
from mtl.results.selection import Member


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_front(objectives: list[str], members: list[Member], front: list[Member]):
    plt = _pyplot()
    front_ids = {m.number for m in front}
    k = len(objectives)
    if k <= 3:
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)] or [(0, 0)]
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 4), squeeze=False)
        for ax, (i, j) in zip(axes[0], pairs):
            for m in members:
                on = m.number in front_ids
                ax.scatter(m.values[i], m.values[j], c="tab:red" if on else "tab:gray", s=40 if on else 18)
                ax.annotate(str(m.number), (m.values[i], m.values[j]), fontsize=7)
            ax.set_xlabel(objectives[i])
            ax.set_ylabel(objectives[j])
    else:  # parallel coordinates, each axis min-max scaled
        fig, ax = plt.subplots(figsize=(2 + 1.6 * k, 4.5))
        cols = list(zip(*[m.values for m in members]))
        lo, hi = [min(c) for c in cols], [max(c) for c in cols]
        # members on a colour scale with no grey in it: grey means dominated
        n_front = max(1, len(front_ids) - 1)
        colour = {n: plt.cm.turbo(0.05 + 0.9 * i / n_front) for i, n in enumerate(sorted(front_ids))}
        for m in sorted(members, key=lambda m: m.number in front_ids):
            ys = [(v - a) / (b - a) if b > a else 0.5 for v, a, b in zip(m.values, lo, hi)]
            on = m.number in front_ids
            ax.plot(range(k), ys, color=colour.get(m.number, "lightgray"), lw=2 if on else 1, marker="o" if on else None,
                    label=f"trial {m.number}" if on else None)
        ax.set_xticks(range(k), [f"{o}\n[{a:.2f}, {b:.2f}]" for o, a, b in zip(objectives, lo, hi)], fontsize=8)
        ax.set_yticks([])
        if len(front_ids) <= 12:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle("Pareto front among completed trials (grey: dominated)" if k > 3 else "Pareto front (red) among completed trials")
    fig.tight_layout()
    return fig


def plot_curves(client, metric_keys: list[str], front: list[Member]):
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metric_keys), figsize=(3.6 * len(metric_keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], metric_keys):
        for m in front:
            hist = sorted(client.get_metric_history(m.run_id, key), key=lambda x: x.step)
            ax.plot([h.step for h in hist], [h.value for h in hist], marker=".", label=f"trial {m.number}")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_hypervolume(client, parent: str):
    """The val front's hypervolume (reference: best constant per task) after each finished trial."""
    hist = sorted(client.get_metric_history(parent, "study/hypervolume"), key=lambda m: m.step)
    if not hist:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot([h.step for h in hist], [h.value for h in hist], marker=".")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume over the best constant")
    ax.set_title("Study progress (val front)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_importances(s, objectives: list[str]):
    """Per task, Optuna's parameter importances (fANOVA) with that task's objective as the target."""
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return None
    imps = {}
    for i, task in enumerate(objectives):
        try:
            imps[task] = optuna.importance.get_param_importances(s, target=lambda t, i=i: t.values[i])
        except (ValueError, RuntimeError):  # too few trials or no varying parameter
            continue
    if not imps:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(imps), figsize=(3.4 * len(imps), 3.6), squeeze=False, sharey=False)
    for ax, (task, imp) in zip(axes[0], imps.items()):
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names])
        ax.set_title(task, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("Parameter importances per task (fANOVA)", fontsize=10)
    fig.tight_layout()
    return fig


def gallery(path: Path, paths: list[Path], lines: list[list[tuple[str, str, str | None]]]) -> None:
    """Images in a grid, each with one line per task under it: `Task: prediction`, green with a tick when it
    matches the manifest's label, red with the label when it does not, black when there is no label."""
    plt = _pyplot()
    n = len(paths)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    k = max(len(x) for x in lines) if lines else 1
    cell_h = 3.2 + 0.27 * k
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, cell_h * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, task_lines in zip(axes.flat, paths, lines):
        with Image.open(p) as im:
            ax.imshow(to_rgb(im))
        ax.set_title(p.name, fontsize=8)
        for i, (name, pred, truth) in enumerate(task_lines):
            if truth is None:
                text, color = f"{name}: {pred}", "black"
            elif pred == truth:
                text, color = f"\u2713 {name}: {pred}", "#1a7f37"
            else:
                text, color = f"\u2717 {name}: {pred} (true: {truth})", "#cf222e"
            ax.text(0.0, -0.04 - i * 0.085, textwrap.shorten(text, 52), transform=ax.transAxes, fontsize=8.5,
                    color=color, va="top", ha="left")
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.25 / (cell_h * rows), bottom=0.27 * k / (cell_h * rows) + 0.02,
                        hspace=0.27 * k / 3.2 + 0.15, wspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def close(fig) -> None:
    _pyplot().close(fig)
