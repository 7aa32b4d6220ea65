"""New studies against reference banks of 50 to 1,000 volumes: each search's time, peak memory
and recall (``scale``), and the voxel AUROC each gives (``auroc``); one JSON each.

    python bench/bench_bank.py scale --volumes 50 200 1000
    python bench/bench_bank.py auroc --volumes 24 1000
    python bench/bench_bank.py scale --volumes 4       # a check that it runs: about a minute

The banks are real banks (:mod:`cs3f.bank`, written by the library as ``bank build`` writes
them) of atlas-space cohort subjects: :func:`cs3f_tools.cohort.make_subject` with
``space="atlas"`` (the MNI152 2 mm grid, a smooth deformation and a residual misalignment; the
three base brains of ../shared/data/nifti/ms and Colin27 taking turns), preprocessed at 112^3
(:class:`PreprocessSettings` ``input="atlas"``) and tokenised with the histogram encoder at
q = 8: about 2,200 coarse tokens of d = 128 per axis, float16 (the product's 224^3 with q = 14
gives 2,544). Variant C. Normal subject n is seeded ``[17, n, 0]``; they are made once and kept
in ``bench/out/bank_bench/subjects``, and the bank of the first B in
``bench/out/bank_bench/bank-B``, its IVF index trained when it is written (timed, kept in
``written.json``). A bank's leave-one-out calibration is not computed (B^2 / 2 pairs); neither
figure needs it.

``scale``: per bank size and search (pairwise, flat, ivf), in a fresh process so that its peak
RSS is its own, one normal and one abnormal new study (subjects not in any bank) are screened
alone through :class:`cs3f.screening.Screening`. Reported per study: the seconds of
``Screening.score`` (the bank search of the study's 3 axes: each axis's index built from the
bank, then searched; pairwise: each bank volume in turn; the study's tokenisation, the same for
all, is not counted), the resident memory before and at most during it (all, and without file
pages: the memmapped bank tokens count in the first), and, for flat and ivf,
the recall of the K nearest distinct-volume distances and the mean relative error of the
token scores against the exact pairwise search (:func:`cs3f.method.token_index.recall_of`).

``auroc``: ``--new`` abnormal and ``--normal`` normal new studies screened against each bank by
each search; :func:`cs3f_tools.metrics.metrics_of` on the studies' own grids.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance import commit

from cs3f.bank import NewVolume, ReferenceBank
from cs3f.bank_search import index_bank, study_k, token_index
from cs3f.decisions import Calibration, ScreeningRules
from cs3f.encoders import load_encoder
from cs3f.method.batch_scorer import ScoringSettings
from cs3f.method.store import TokenStore
from cs3f.method.token_index import exact_neighbours, recall_of
from cs3f.method.tokens import Tokenizer, TokenSettings
from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.screening import Screening, screening_identity, study_score
from cs3f.volume import Volume, spacing
from cs3f_tools.cohort import load_sources, make_subject
from cs3f_tools.metrics import METRIC_KEYS, StudyMaps, metrics_of

OUT = ROOT / "bench" / "out" / "bank_bench"
MS = ROOT.parent / "shared" / "data" / "nifti" / "ms"
SEED = 17
FIRST_NEW = 100_000  # new studies' subject numbers: never in a bank
TOKENS = TokenSettings(q_coarse=8, q_fine=None)
PREPROCESS = PreprocessSettings(input="atlas", size=112)
SCORING = ScoringSettings(variant="C")
RULES = ScreeningRules()
SEARCHES = ("pairwise", "flat", "ivf")


def _subject(n: int, abnormal: bool, sources):
    """Subject n (atlas space) and its standardised brain region."""
    subject = make_subject(
        np.random.default_rng([SEED, n, int(abnormal)]),
        abnormal,
        sources,
        sizes=("large", "xlarge"),
        space="atlas",
        host=n % len(sources.brains),
    )
    return subject, preprocess_brain(Volume(subject.image, subject.affine), PREPROCESS)


def normal_volumes(count: int, encoder) -> list[NewVolume]:
    """The first ``count`` normal subjects as bank volumes, tokenised once and kept."""
    tokenizer, sources, volumes = Tokenizer(encoder, TOKENS), None, []
    for n in range(count):
        folder = OUT / "subjects" / f"n{n:05d}"
        if not (folder / "index.json").exists():  # written last: a subject is whole or redone
            sources = sources or load_sources(MS)
            _, region = _subject(n, False, sources)
            store = TokenStore(folder)
            for key, tokens in tokenizer.tokenize(region.volume, region.mask).items():
                store.put(0, key, tokens)
            np.savez_compressed(folder / "mask.npz", mask=region.mask)
            store.write_index()
        store = TokenStore.open(folder)
        with np.load(folder / "mask.npz") as saved:
            mask = saved["mask"]
        sets = {key: store.get(0, key) for key in store.keys()}
        volumes.append(NewVolume(f"n{n:05d}", {"brain": sets}, {"brain": mask}))
    return volumes


def bank_of(size: int, encoder) -> ReferenceBank:
    """The bank of the first ``size`` normal subjects, written (and indexed) once."""
    root = OUT / f"bank-{size}"
    if (root / "written.json").exists():  # written last
        return ReferenceBank.open(root)
    shutil.rmtree(root, ignore_errors=True)
    identity = screening_identity(encoder, TOKENS, SCORING, RULES, dataclasses.asdict(PREPROCESS))
    placeholder = Calibration(0.0, (0.0,), RULES.flag_mad).as_dict()  # not computed (B^2 pairs)
    start = time.perf_counter()
    bank = ReferenceBank.create(root, identity, normal_volumes(size, encoder), placeholder)
    written = time.perf_counter() - start
    start = time.perf_counter()
    bank = index_bank(bank)
    trained = time.perf_counter() - start
    record = {"write_seconds": round(written, 1), "ivf_train_seconds": round(trained, 1)}
    (root / "written.json").write_text(json.dumps(record))
    return bank


def _new_studies(normal: int, abnormal: int):
    """(uid, abnormal, subject, region) of new studies, normal ones first."""
    sources = load_sources(MS)
    kinds = [(FIRST_NEW + n, False) for n in range(normal)] + [
        (FIRST_NEW + n, True) for n in range(abnormal)
    ]
    return [(f"{'a' if a else 'n'}{n}", a, *_subject(n, a, sources)) for n, a in kinds]


def _screening(bank: ReferenceBank, search: str, work: Path, encoder, regions) -> Screening:
    """The studies tokenised, not yet scored."""
    scoring = dataclasses.replace(SCORING, bank_index=search)
    screening = Screening(encoder, TOKENS, scoring, RULES, work, bank)
    for region in regions:
        screening.add([region])
    return screening


def resident_mb() -> tuple[float, float]:
    """This process's resident set size now and the part of it that is not file pages (the
    bank's memmapped tokens are file pages: the page cache, which the kernel can drop), MB."""
    _, resident, shared = Path("/proc/self/statm").read_text().split()[:3]
    page = os.sysconf("SC_PAGE_SIZE") / 2**20
    return int(resident) * page, (int(resident) - int(shared)) * page


class PeakRss:
    """:func:`resident_mb` at most while the ``with`` block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRss:
        self.peak, self._done = resident_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = tuple(max(a, b) for a, b in zip(self.peak, resident_mb()))

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def scale_one(size: int, search: str) -> list[dict]:
    """One bank size and search, in this process: a normal and an abnormal study alone."""
    encoder = load_encoder("histogram", device="cpu")
    bank = bank_of(size, encoder)
    rows = []
    for uid, _, _, region in _new_studies(1, 1):
        with tempfile.TemporaryDirectory(dir=OUT) as work:
            screening = _screening(bank, search, Path(work), encoder, [region])
            before = resident_mb()
            with PeakRss() as rss:
                start = time.perf_counter()
                screening.score()
                seconds = time.perf_counter() - start
            row = {
                "bank_volumes": size,
                "search": search,
                "study": uid,
                "K": study_k(bank, SCORING),
                "search_seconds": round(seconds, 2),
                "index_build_seconds": round(screening.timings.get("scorer_bank_index", 0.0), 2),
                "rss_before_mb": round(before[0]),
                "peak_rss_mb": round(rss.peak[0]),
                "anonymous_before_mb": round(before[1]),
                "peak_anonymous_mb": round(rss.peak[1]),
            }
            if search != "pairwise":
                row |= _recall(bank, screening, search)
            rows.append(row)
    return rows


def _recall(bank: ReferenceBank, screening: Screening, search: str) -> dict:
    """Recall and token-score error of the study's 3 axes against the exact search, pooled."""
    store, k = screening.scorers["brain"].store, study_k(bank, SCORING)
    found, exact = [], []
    for key in bank.keys:
        query = np.asarray(store.get(0, key).features, dtype=np.float32)
        found.append(token_index(bank, "brain", key, search, SCORING).neighbours(query, k))
        references = [t.features for t in bank.token_sets("brain", key)]
        exact.append(exact_neighbours(query, references, k))
    pooled = [tuple(np.concatenate(part) for part in zip(*pairs)) for pairs in (exact, found)]
    recall, error = recall_of(pooled[0], pooled[1], len(bank.volumes))
    layouts = [bank.layouts[("brain", key)] for key in bank.keys] if search == "ivf" else []
    return {
        "recall": round(recall, 4),
        "score_error": float(f"{error:.2g}"),
        **({"nlist": layouts[0].nlist, "nprobe": [x.nprobe for x in layouts]} if layouts else {}),
        **({"held_out_recall": [round(x.recall, 4) for x in layouts]} if layouts else {}),
    }


def auroc(sizes: list[int], searches: list[str], normal: int, abnormal: int) -> list[dict]:
    """Voxel and patient metrics of the new studies screened against each bank by each of
    ``searches``."""
    encoder = load_encoder("histogram", device="cpu")
    studies = _new_studies(normal, abnormal)
    results = []
    for size in sizes:
        bank = bank_of(size, encoder)
        for search in searches:
            with tempfile.TemporaryDirectory(dir=OUT) as work:
                screening = _screening(bank, search, Path(work), encoder, [s[3] for s in studies])
                start = time.perf_counter()
                screening.score()
                seconds = time.perf_counter() - start
                patients, maps = [], []
                for index, (uid, is_abnormal, subject, region) in enumerate(studies):
                    standard = screening.voxel_maps(index)
                    patients.append((uid, is_abnormal, study_score(standard)))
                    voxel_mm3 = float(np.prod(spacing(region.transform.source_affine)))
                    source = screening.source_map(index, standard)
                    maps.append(StudyMaps(uid, is_abnormal, source, subject.lesions, voxel_mm3))
            metrics, details, _ = metrics_of(patients, maps)
            entry = {
                "bank_volumes": size,
                "search": search,
                "studies": len(studies),
                "search_seconds": round(seconds, 1),
                "metrics": {k: None if metrics[k] is None else round(metrics[k], 4)
                            for k in METRIC_KEYS},
                "lesions_found": details["lesions_found"],
            }  # fmt: skip
            print(json.dumps(entry), file=sys.stderr, flush=True)
            results.append(entry)
    return results


def main() -> None:
    summary = " ".join(__doc__.split("\n\n")[0].split())  # the first sentence, whole
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument(
        "mode", choices=("scale", "auroc", "one"), help="one: a child of scale (one size, search)"
    )
    parser.add_argument("--volumes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--searches", nargs="+", choices=SEARCHES, default=list(SEARCHES))
    parser.add_argument("--new", type=int, default=8, help="auroc: abnormal new studies")
    parser.add_argument("--normal", type=int, default=4, help="auroc: normal new studies")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.mode == "one":  # a child of scale: one size and search
        print(json.dumps(scale_one(args.volumes[0], args.searches[0])))
        return
    if args.mode == "auroc":
        results = auroc(args.volumes, args.searches, args.normal, args.new)
    else:
        encoder = load_encoder("histogram", device="cpu")
        results = []
        for size in args.volumes:
            bank_of(size, encoder)  # written once, before any timing
            for search in args.searches:
                command = [sys.executable, __file__, "one", "--volumes", str(size)]
                done = subprocess.run(
                    [*command, "--searches", search], capture_output=True, text=True, check=True
                )
                rows = json.loads(done.stdout.splitlines()[-1])
                print("\n".join(map(json.dumps, rows)), file=sys.stderr, flush=True)
                results += rows
        writes = {
            size: json.loads((OUT / f"bank-{size}" / "written.json").read_text())
            for size in args.volumes
        }
        results = {"rows": results, "bank_writes": writes}
    print(json.dumps({"commit": commit(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
