"""One new study against reference banks of growing size, through the bank index; one JSON.

    python bench/bench_bank.py --volumes 50 200            # synthetic tokens, coarse variant

Per bank size and index kind (flat = exact, ivf = approximate): seconds to build the index, seconds and
peak RSS to score one new study's coarse tokens of 3 axes (2,544 tokens of d = 128 each, the
brain grid's count), and the recall of the K nearest distinct-volume distances against the flat
index (the fraction within 1e-4 relative of the exact ones). The tokens are synthetic: volumes
draw their tokens around shared cluster centres, so that neighbours are structured as in real
banks; the timing does not depend on their values. One axis's index is built and searched
three times (the three axes cost the same).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provenance import commit

from cs3f.method.token_index import INDEX_KINDS, VolumeTokenIndex

N_TOKENS, DIM, AXES = 2544, 128, 3


def synthetic_volumes(n_volumes: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((512, DIM)).astype(np.float32)
    out = []
    for _ in range(n_volumes):
        tokens = centres[rng.integers(0, len(centres), N_TOKENS)]
        tokens = tokens + 0.5 * rng.standard_normal((N_TOKENS, DIM), dtype=np.float32)
        out.append(tokens / np.linalg.norm(tokens, axis=1, keepdims=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--kinds", nargs="+", choices=INDEX_KINDS, default=list(INDEX_KINDS))
    parser.add_argument("--rho", type=float, default=0.1)
    args = parser.parse_args()
    results = []
    for n_volumes in args.volumes:
        bank = synthetic_volumes(n_volumes)
        query = synthetic_volumes(1, seed=1)[0]
        k = max(1, int(args.rho * n_volumes))
        exact = None
        for kind in args.kinds:
            start = time.perf_counter()
            index = VolumeTokenIndex(bank, kind)
            built = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(AXES):
                found = index.nearest_volumes(query, k)
            seconds = time.perf_counter() - start
            exact = found if kind == "flat" else exact
            recall = (
                float(np.isclose(found, exact, rtol=1e-4).mean()) if exact is not None else None
            )
            entry = {
                "bank_volumes": n_volumes,
                "kind": kind,
                "K": k,
                "build_seconds": round(built, 2),
                "study_seconds": round(seconds, 2),
                "recall": recall,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
            print(json.dumps(entry), file=sys.stderr, flush=True)
            results.append(entry)
            del index
    print(json.dumps({"commit": commit(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
