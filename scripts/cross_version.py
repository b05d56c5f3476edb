"""Compare the errors of the same cases run on two FEniCSx versions (Debian 12's 0.5.2, Debian 13's 0.9.0).

    python scripts/cross_version.py out/cross_version/debian12 out/cross_version/debian13 [--rtol 1e-8]

Every number under ``reference.vs_exact``, ``method.vs_reference`` and ``method.vs_exact`` of each
case's ``metrics.json`` must agree to ``rtol`` (relative, with an absolute floor of 1e-14). Exit code 1
names each number that does not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SECTIONS = (("reference", "vs_exact"), ("method", "vs_reference"), ("method", "vs_exact"))


def errors(metrics: dict) -> dict[str, float]:
    out = {}
    for outer, inner in SECTIONS:
        for key, value in metrics.get(outer, {}).get(inner, {}).items():
            out[f"{outer}.{inner}.{key}"] = float(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-8)
    args = parser.parse_args()
    cases = sorted(p.parent.name for p in args.first.glob("*/metrics.json"))
    if not cases:
        print(f"no */metrics.json under {args.first}", file=sys.stderr)
        return 1
    bad = 0
    for case in cases:
        other = args.second / case / "metrics.json"
        if not other.is_file():
            print(f"{case}: missing {other}")
            bad += 1
            continue
        a = errors(json.loads((args.first / case / "metrics.json").read_text()))
        b = errors(json.loads(other.read_text()))
        worst = 0.0
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                print(f"{case}: {key} only in one run")
                bad += 1
                continue
            rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-14)
            worst = max(worst, rel)
            if not math.isfinite(rel) or rel > args.rtol:
                print(f"{case}: {key} = {a[key]:.12e} vs {b[key]:.12e} (relative difference {rel:.1e})")
                bad += 1
        print(f"{case}: {len(a)} error norms, largest relative difference {worst:.1e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
