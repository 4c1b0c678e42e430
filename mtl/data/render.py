"""Demo datasets drawn with pillow from manifest labels: `fgo_synth` (characters) and `utk_synth` (faces).

Every image is a pure function of its row (labels + a seed hashed from its path), so `make data`
writes the same bytes every run. Labels leave visible but noisy evidence, with difficulty spread
as on the real art: gender is drawn boldly, alignment only through a chest badge (law axis: square,
ring or star) and the figure's brightness and aura (moral axis; evil characters are drawn darker,
with a dark aura, as in FGO). Single-label classes are balanced over characters.
Renderings of one character vary pose, scale, background and weapon placement.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mtl.data.manifest import Manifest
from mtl.tasks import MULTILABEL_SEP

CANVAS = 128  # drawn at this size, then resized to the requested size (anti-aliasing for free)

FGO_TASKS = {
    "gender": ("binary", ["Female", "Male"]),
    "region": ("multiclass", ["Asia", "Egypt", "Europe", "Middle East"]),
    "fighting_style": ("multiclass", ["magic", "melee", "ranged"]),
    "alignment": ("multiclass", ["LG", "NG", "CG", "LN", "TN", "CN", "LE", "NE", "CE"]),
    "colors": ("multilabel", ["White", "Red", "Green", "Black", "Blue", "Purple", "Gold", "Silver"]),
}
PALETTE = {"White": (240, 240, 236), "Red": (200, 32, 36), "Green": (34, 150, 60), "Black": (22, 22, 26),
           "Blue": (34, 70, 200), "Purple": (122, 44, 164), "Gold": (222, 180, 40), "Silver": (168, 174, 186)}
UTK_RACES = ["White", "Black", "Asian", "Indian", "Others"]
FGO_TITLES = {"colors": "Main Colors"}  # the write-up's words for its captions


def fgo_task_spec(name: str) -> dict:
    kind, classes = FGO_TASKS[name]
    return {"name": name, "kind": kind, "classes": classes, **({"title": FGO_TITLES[name]} if name in FGO_TITLES else {})}


def row_rng(image: str, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(zlib.crc32((salt + image).encode()))


# ------------------------------------------------------------------------------------------------
# fgo_synth
# ------------------------------------------------------------------------------------------------
def _shade(rgb, f):
    return tuple(int(max(0, min(255, c * f))) for c in rgb)


def draw_fgo(labels: dict, rng: np.random.Generator) -> Image.Image:
    """One rendering of a character; `labels` holds its true labels (all tasks, none missing)."""
    bg = tuple(int(v) for v in rng.integers(70, 200, 3))
    im = Image.new("RGB", (CANVAS, CANVAS), bg)
    d = ImageDraw.Draw(im)
    # background clutter in muted tones so colour evidence is noisy, not absent
    for _ in range(rng.integers(2, 6)):
        x, y, r = rng.integers(0, CANVAS, 2).tolist() + [int(rng.integers(6, 22))]
        tone = _shade(bg, float(rng.uniform(0.7, 1.25)))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tone)

    align = labels["alignment"]
    law, moral = align[0], align[1]
    # moral axis: evil darker (noisy factor), good brighter
    light = {"G": 1.06, "N": 0.96, "E": 0.8}[moral] * float(rng.uniform(0.92, 1.06))  # on skin only
    colors = labels["colors"]
    # clothing keeps its palette colour (colour is a label), with a little dye noise
    main = [_shade(PALETTE[c], float(rng.uniform(0.93, 1.05))) for c in colors]
    while len(main) < 3:
        main.append(main[0])

    s = float(rng.uniform(0.72, 1.0))  # scale
    cx = CANVAS / 2 + float(rng.uniform(-14, 14))
    top = 18 + float(rng.uniform(-6, 10))

    def P(x, y):  # character-local coordinates -> canvas
        return (cx + x * s, top + y * s)

    if moral in "GE" and rng.random() < 0.9:  # aura: golden halo for good, dark smoke for evil
        aura = (252, 236, 150) if moral == "G" else (45, 8, 55)
        r = 48 * s
        d.ellipse([cx - r, top + 40 * s - r, cx + r, top + 40 * s + r], outline=aura, width=max(3, int(5 * s)))

    skin = {"Asia": (238, 205, 170), "Egypt": (170, 120, 80), "Europe": (245, 215, 195),
            "Middle East": (205, 160, 120)}[labels["region"]]
    skin = _shade(skin, light)
    hair = [(90, 55, 30), (230, 200, 120), (210, 120, 150), (150, 80, 40)][int(rng.integers(0, 4))]
    female = labels["gender"] == "Female"

    # gender is the bold cue (as on the real art): long, wide hair and a flared dress with narrow
    # shoulders, or short hair, broad square shoulders and legs
    # colours: a cape behind the body in the second colour, body in the first, a broad sash, belt and
    # legs/hem in the third (the first again when a character has two colours)
    d.polygon([P(-24, 30), P(24, 30), P(38, 110), P(-38, 110)], fill=main[1])
    if female:
        d.polygon([P(-18, 8), P(18, 8), P(24, 66), P(-24, 66)], fill=hair)
        d.polygon([P(-9, 30), P(9, 30), P(34, 104), P(-34, 104)], fill=main[0])
        d.polygon([P(-31, 96), P(31, 96), P(34, 104), P(-34, 104)], fill=main[2])
    else:
        d.rectangle([*P(-27, 30), *P(27, 42)], fill=main[0])
        d.polygon([P(-27, 40), P(27, 40), P(17, 98), P(-17, 98)], fill=main[0])
        d.rectangle([*P(-15, 98), *P(-4, 114)], fill=main[2])
        d.rectangle([*P(4, 98), *P(15, 114)], fill=main[2])
    d.polygon([P(-16, 32), P(-3, 32), P(17, 80), P(4, 80)], fill=main[2])
    d.rectangle([*P(-22, 82), *P(22, 90)], fill=main[2])
    # head
    d.ellipse([*P(-12, 4), *P(12, 30)], fill=skin)
    if not female:
        d.chord([*P(-13, 2), *P(13, 22)], 180, 360, fill=hair)
    else:
        d.chord([*P(-14, 1), *P(14, 24)], 180, 360, fill=hair)
    # eyes
    for ex in (-5, 4):
        d.ellipse([*P(ex, 14), *P(ex + 2, 17)], fill=(20, 20, 20))

    # region: headgear (absent in ~8 % of renderings: noisy evidence)
    if rng.random() < 0.92:
        reg = labels["region"]
        if reg == "Asia":  # wide conical straw hat
            d.polygon([P(-32, 10), P(32, 10), P(0, -14)], fill=(196, 150, 70))
            d.line([P(-32, 10), P(32, 10)], fill=(120, 80, 30), width=max(2, int(3 * s)))
        elif reg == "Egypt":  # striped nemes falling to the shoulders
            d.polygon([P(-15, 0), P(15, 0), P(25, 36), P(-25, 36)], fill=(40, 60, 170))
            for k in range(5):
                y = 3 + 7 * k
                d.line([P(-16 - 2 * k, y), P(16 + 2 * k, y)], fill=(235, 195, 60), width=max(2, int(3 * s)))
            d.ellipse([*P(-11, 5), *P(11, 29)], fill=skin)
        elif reg == "Europe":  # tall crown of spikes
            d.polygon([P(-13, 6), P(-13, -12), P(-6, -2), P(0, -16), P(6, -2), P(13, -12), P(13, 6)],
                      fill=(230, 192, 50))
        else:  # big white turban with a jewel
            d.ellipse([*P(-19, -12), *P(19, 12)], fill=(238, 238, 228))
            d.ellipse([*P(-4, -4), *P(4, 4)], fill=(190, 30, 40))

    # fighting style: weapon on a random side at a random angle
    side = 1 if rng.random() < 0.5 else -1
    hx, hy = P(side * 26, 60)
    ang = math.radians(float(rng.uniform(-35, 35)) - 90)
    L = 52 * s
    tip = (hx + math.cos(ang) * L, hy + math.sin(ang) * L)
    style = labels["fighting_style"]
    w = max(4, int(7 * s))
    if style == "melee":  # sword: long broad blade with a cross guard
        d.line([(hx, hy), tip], fill=(230, 232, 240), width=w)
        gx, gy = hx + math.cos(ang) * 10 * s, hy + math.sin(ang) * 10 * s
        px, py = -math.sin(ang) * 12 * s, math.cos(ang) * 12 * s
        d.line([(gx - px, gy - py), (gx + px, gy + py)], fill=(120, 80, 30), width=w)
    elif style == "ranged":  # bow: thick arc, string and a crossing arrow
        r = 30 * s
        cyb = hy - 26 * s
        start, end = (-70, 70) if side > 0 else (110, 250)
        d.arc([hx - r, cyb - r, hx + r, cyb + r], start, end, fill=(120, 72, 28), width=w)
        ax = hx + (r * 0.34 if side > 0 else -r * 0.34)
        d.line([(ax, cyb - r * 0.94), (ax, cyb + r * 0.94)], fill=(235, 235, 235), width=2)
        d.line([(ax - side * 22 * s, cyb), (ax + side * 30 * s, cyb)], fill=(90, 60, 30), width=max(2, w // 2))
    else:  # magic: staff with a big glowing orb and sparkles
        d.line([(hx, hy), tip], fill=(100, 65, 35), width=max(3, w // 2))
        r = 11 * s
        d.ellipse([tip[0] - r * 1.5, tip[1] - r * 1.5, tip[0] + r * 1.5, tip[1] + r * 1.5], fill=(190, 245, 255))
        d.ellipse([tip[0] - r, tip[1] - r, tip[0] + r, tip[1] + r], fill=(70, 220, 255))
        for _ in range(4):
            sx, sy = tip[0] + float(rng.uniform(-22, 22)) * s, tip[1] + float(rng.uniform(-22, 22)) * s
            d.line([(sx - 3, sy), (sx + 3, sy)], fill=(255, 255, 200), width=2)
            d.line([(sx, sy - 3), (sx, sy + 3)], fill=(255, 255, 200), width=2)

    # law axis: a chest emblem, a black square (lawful), ring (neutral) or star (chaotic) with a pale
    # rim; missing in ~10 % of renderings. Still the subtlest cue: a few pixels at 64 px.
    if rng.random() < 0.9:
        ex, ey = P(float(rng.uniform(-3, 3)), 50)
        r = 12.0 * s
        ink, rim = (15, 15, 18), (235, 230, 215)
        w = max(2, int(3 * s))
        if law == "L":
            d.rectangle([ex - r * 0.8, ey - r * 0.8, ex + r * 0.8, ey + r * 0.8], fill=ink, outline=rim, width=w)
        elif law == "N":
            d.ellipse([ex - r, ey - r, ex + r, ey + r], outline=rim, width=w * 2 + 2)
            d.ellipse([ex - r + w, ey - r + w, ex + r - w, ey + r - w], outline=ink, width=w + 1)
        else:
            pts = [(ex + r * 1.3 * math.cos(k * math.pi / 5 - math.pi / 2) * (1 if k % 2 == 0 else 0.4),
                    ey + r * 1.3 * math.sin(k * math.pi / 5 - math.pi / 2) * (1 if k % 2 == 0 else 0.4))
                   for k in range(10)]
            d.polygon(pts, fill=ink, outline=rim, width=w)

    # sensor-style noise
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (CANVAS, CANVAS, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------
# utk_synth
# ------------------------------------------------------------------------------------------------
def draw_utk(labels: dict, rng: np.random.Generator) -> Image.Image:
    """A face-like render: skin/hair by race (overlapping), grey hair and lines by age, hair/beard by gender."""
    age = float(labels["age"])
    race = labels["race"]
    female = labels["gender"] == "Female"
    bg = tuple(int(v) for v in rng.integers(90, 220, 3))
    im = Image.new("RGB", (CANVAS, CANVAS), bg)
    d = ImageDraw.Draw(im)
    base = {"White": (236, 200, 180), "Black": (110, 72, 50), "Asian": (232, 196, 150),
            "Indian": (170, 118, 82), "Others": (200, 150, 120)}[race]
    skin = tuple(int(np.clip(c + rng.normal(0, 14), 0, 255)) for c in base)
    hair_base = {"White": (150, 110, 60), "Black": (25, 20, 20), "Asian": (20, 20, 25),
                 "Indian": (30, 25, 25), "Others": (70, 45, 30)}[race]
    grey = float(np.clip((age - 35) / 45 + rng.normal(0, 0.12), 0, 1))  # grey hair from mid-thirties
    hair = tuple(int(h * (1 - grey) + 200 * grey) for h in hair_base)

    child = age < 14
    fw = (30 if child else 34) + float(rng.uniform(-3, 3))
    fh = (34 if child else 44) + float(rng.uniform(-3, 3))
    cx = CANVAS / 2 + float(rng.uniform(-8, 8))
    cy = CANVAS / 2 + 6 + float(rng.uniform(-6, 6))
    if female:  # long hair behind the face
        d.rectangle([cx - fw - 6, cy - fh * 0.6, cx + fw + 6, cy + fh + 10], fill=hair)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    d.chord([cx - fw - 2, cy - fh - 6, cx + fw + 2, cy + fh * 0.2], 180, 360, fill=hair)
    eye = 5 if child else 3.5
    for ex in (-13, 13):
        d.ellipse([cx + ex - eye, cy - 6 - eye, cx + ex + eye, cy - 6 + eye], fill=(30, 30, 30))
    lip = (190, 60, 80) if female else _shade(skin, 0.7)
    d.line([cx - 9, cy + fh * 0.5, cx + 9, cy + fh * 0.5], fill=lip, width=3 if female else 2)
    # wrinkles: more lines and darker with age
    n_lines = int(np.clip((age - 25) / 10 + rng.normal(0, 0.8), 0, 6))
    for k in range(n_lines):
        y = cy - fh * 0.55 + 4 * k
        d.line([cx - 12, y, cx + 12, y + float(rng.uniform(-1, 1))], fill=_shade(skin, 0.72), width=1)
    if not female and age >= 18 and rng.random() < 0.6:  # beard or stubble
        d.chord([cx - fw * 0.8, cy + fh * 0.2, cx + fw * 0.8, cy + fh * 1.02], 0, 180, fill=hair)
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 5, (CANVAS, CANVAS, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


DRAWERS = {"fgo": draw_fgo, "utk": draw_utk}


# ------------------------------------------------------------------------------------------------
# rendering a manifest
# ------------------------------------------------------------------------------------------------
def true_labels(m: Manifest) -> list[dict]:
    """Each row's labels with missing cells filled from its group (a character keeps its labels)."""
    t = m.table
    per_group: dict[str, dict] = {}
    for _, row in t.iterrows():
        g = per_group.setdefault(row["group"], {})
        for task in m.tasks:
            if row[task.name].strip() and task.name not in g:
                g[task.name] = row[task.name]
    out = []
    for _, row in t.iterrows():
        labels = {}
        for task in m.tasks:
            cell = row[task.name].strip() or per_group[row["group"]].get(task.name) or task.classes[0]
            labels[task.name] = task.kind_impl.cell_value(cell)
        out.append(labels)
    return out


def render_manifest(m: Manifest, style: str, size: int = 64) -> int:
    """Draw every image of the manifest into its root; returns the number written."""
    draw = DRAWERS[style]
    labels = true_labels(m)
    m.root.mkdir(parents=True, exist_ok=True)
    for image, lab in zip(m.table["image"], labels):
        im = draw(lab, row_rng(image, style))
        if size != CANVAS:
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        dest = m.root / image
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        im.save(tmp, format="PNG", optimize=False)
        os.replace(tmp, dest)  # never leave a half-written image behind
    return len(labels)


# ------------------------------------------------------------------------------------------------
# generating the committed demo manifests (run once by developers: python -m mtl data make-manifests)
# ------------------------------------------------------------------------------------------------
def assign_splits(groups: list[str], seed: int = 0, fractions=(0.7, 0.15, 0.15)) -> dict[str, str]:
    """Grouped split (70/15/15 unless told): every group goes wholly to one split (deterministic for a seed)."""
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    n = len(uniq)
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    out = {}
    for rank, idx in enumerate(order):
        out[uniq[idx]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


# share of each task's cells left empty (partial labels; ~7 % of all cells)
FGO_MISSING = {"gender": 0.03, "region": 0.08, "fighting_style": 0.06, "alignment": 0.12, "colors": 0.05}


def balanced(rng: np.random.Generator, classes: list[str], n: int) -> list[str]:
    """n labels with every class as often as possible (counts differ by at most one), shuffled."""
    return [classes[i % len(classes)] for i in rng.permutation(n)]


def make_fgo_manifest(n_chars: int = 400, per_char: int = 3, seed: int = 7,
                      fractions=(0.5, 0.25, 0.25)) -> tuple[pd.DataFrame, dict]:
    """400 characters x 3 renderings, grouped 50/25/25: val and test hold 100 characters (300 images)
    each, so one character moves a test score by 1 %, not 11 %. Single-label tasks are balanced."""
    rng = np.random.default_rng(seed)
    cols = {k: balanced(rng, v[1], n_chars) for k, v in FGO_TASKS.items() if k != "colors"}
    chars = []
    for c in range(n_chars):
        ch = {k: v[c] for k, v in cols.items()}
        ncol = int(rng.integers(2, 4))
        ch["colors"] = [FGO_TASKS["colors"][1][i] for i in sorted(rng.choice(8, ncol, replace=False))]
        chars.append((f"servant_{c:03d}", ch))
    splits = assign_splits([g for g, _ in chars], seed, fractions)
    rows = []
    for g, ch in chars:
        for r in range(per_char):
            row = {"image": f"{splits[g]}/{g}_{r:02d}.png", "group": g, "split": splits[g]}
            for k, v in ch.items():
                row[k] = MULTILABEL_SEP.join(v) if k == "colors" else v
            # partial labels, never on the first rendering, so the renderer can always recover a
            # character's true label; the rate is scaled up to hit FGO_MISSING over all renderings
            for k, p in FGO_MISSING.items():
                if r > 0 and rng.random() < p * per_char / (per_char - 1):
                    row[k] = ""
            rows.append(row)
    spec = {"root": "../data/fgo_synth", "render": "fgo",
            "tasks": [fgo_task_spec(k) for k in FGO_TASKS]}
    return pd.DataFrame(rows), spec


def make_utk_manifest(n_ids: int = 300, per_id: int = 4, seed: int = 11,
                      fractions=(0.6, 0.2, 0.2)) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    ids = [f"person_{i:04d}" for i in range(n_ids)]
    splits = assign_splits(ids, seed, fractions)  # 60 identities (240 images) in val and in test
    rows = []
    for g in ids:
        age0 = int(rng.integers(1, 91))
        gender = ["Male", "Female"][int(rng.integers(0, 2))]
        race = UTK_RACES[int(rng.choice(5, p=[0.42, 0.19, 0.15, 0.17, 0.07]))]
        for r in range(per_id):
            age = int(np.clip(age0 + rng.integers(-2, 3), 1, 90))
            rows.append({"image": f"{splits[g]}/{g}_{r}.png", "group": g, "split": splits[g],
                         "age": str(age), "gender": gender, "race": race})
    spec = {"root": "../data/utk_synth", "render": "utk",
            "tasks": [{"name": "age", "kind": "regression"},
                      {"name": "gender", "kind": "binary", "classes": ["Male", "Female"]},
                      {"name": "race", "kind": "multiclass", "classes": UTK_RACES}]}
    return pd.DataFrame(rows), spec


def write_manifest(table: pd.DataFrame, spec: dict, csv_path: Path) -> None:
    import json

    from mtl.data.manifest import spec_path_for
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    spec_path_for(csv_path).write_text(json.dumps(spec, indent=2) + "\n")
