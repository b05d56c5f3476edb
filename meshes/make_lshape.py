"""Regenerate the shipped L-shaped mesh ``meshes/lshape.msh`` (needs gmsh).

Usage: ``python meshes/make_lshape.py [h]`` (default ``h = 0.1``).
"""

import sys
from pathlib import Path

# run from a checkout: make the repository's neuralpde importable even when it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralpde.meshes.lshape import lshape_msh  # noqa: E402

if __name__ == "__main__":
    h = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
    out = lshape_msh(Path(__file__).with_name("lshape.msh"), h=h)
    print(f"wrote {out} (h={h})")
