"""Serving cost of the default study's registered models, through MLflow's own client: images/s of
`models:/<study>@ensemble` and `@best` against the single best model `@best-<task>` on the same images.

Each ratio is the median of `repeats` (>= 5) alternating rounds (one timing of every model per round,
so machine drift hits all of them alike), with its min-max spread over the rounds.
"""

from __future__ import annotations

import statistics
import time

from mtl.errors import UserError


def alternating(fns: dict, repeats: int = 5) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in `repeats` alternating rounds after one warm-up each."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def ratio(times: dict[str, list[float]], a: str, b: str) -> dict:
    """Speed of a relative to b (b's seconds / a's seconds) per round: median, min, max."""
    per_round = [tb / ta for ta, tb in zip(times[a], times[b])]
    return {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}


def serving_ratios(study: str, n_images: int = 256, repeats: int = 5) -> dict:
    """ensemble_vs_single and composite_vs_single of the study's registered models (None where absent)."""
    import mlflow
    import pandas as pd

    from mtl.data.manifest import load_manifest
    from mtl.serve.registry import alias_version
    from mtl.track import tracking
    from mtl.tune.studies import load_study
    empty = {"ensemble_vs_single": None, "composite_vs_single": None}
    try:
        spec = load_study(study)
    except UserError:
        return empty
    client = tracking.get_client()
    single = f"best-{spec.objectives[0]}"
    aliases = [a for a in (single, "ensemble", "best") if alias_version(client, study, a) is not None]
    if single not in aliases or len(aliases) < 2:
        return empty
    m = load_manifest(spec.manifest)
    df = pd.DataFrame({"image": [str(m.root / p) for p in m.rows("test")["image"]][:n_images]})
    models = {a: mlflow.pyfunc.load_model(f"models:/{study}@{a}") for a in aliases}
    times = alternating({a: (lambda mdl=mdl: mdl.predict(df)) for a, mdl in models.items()}, repeats)
    out = dict(empty)
    raw = {"images": len(df), "repeats": repeats,
           "images_per_s": {a: statistics.median(len(df) / t for t in ts) for a, ts in times.items()}}
    for key, alias in (("ensemble_vs_single", "ensemble"), ("composite_vs_single", "best")):
        if alias in times:
            r = ratio(times, alias, single)
            out[key], raw[f"{key}_spread"] = r["median"], [r["min"], r["max"]]
    return {**out, "raw_serving": raw}
