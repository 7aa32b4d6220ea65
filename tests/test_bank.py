"""The reference bank on disk: round trip (create, add, remove, reopen), scores against it as in
a batch, a run with other settings refused by name, and damaged or misused banks refused with
a reason, never left half-written; the bank's index stored, dropped, refused when damaged and
rebuilt, and the search ``auto`` picks."""

import dataclasses
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import DISTANCE_ATOL

from cs3f.bank import BankError, BankMismatch, NewVolume, ReferenceBank
from cs3f.bank_search import AUTO_IVF_VOLUMES, RECALL_TARGET, bank_search
from cs3f.encoders import load_encoder
from cs3f.method.batch_scorer import ScoringSettings
from cs3f.method.scoring import mutual_scores
from cs3f.method.token_index import IvfLayout, VolumeTokenIndex, train_ivf
from cs3f.method.tokens import Tokenizer, TokenKey, TokenSettings

IDENTITY = {"encoder": "pixels-p14", "weights_sha256": None, "tokens": {"dim": 16, "q": [14, 2]}}
CALIBRATION = {"voxel_threshold": 0.5, "reference_scores": [0.1, 0.2], "flag_mad": 3.0}


@pytest.fixture(scope="module")
def volumes():
    """Five small volumes' brain token sets (pixels encoder) and masks."""
    tokenizer = Tokenizer(load_encoder("pixels", device="cpu"), TokenSettings(dim=16))
    rng = np.random.default_rng(0)
    mask = np.zeros((28, 28, 28), bool)
    mask[4:24, 5:23, 3:25] = True
    out = []
    for n in range(5):
        volume = (rng.random(mask.shape, dtype=np.float32) * mask).astype(np.float32)
        out.append(
            NewVolume(
                f"v{n:02d}",
                {"brain": tokenizer.tokenize(volume, mask)},
                {"brain": mask},
                study_date=f"2026-0{n + 1}-01",
            )
        )
    return out


def test_round_trip_create_add_remove_reopen(volumes, tmp_path):
    root = tmp_path / "bank"
    bank = ReferenceBank.create(root, IDENTITY, volumes[:3], CALIBRATION)
    assert [v.id for v in bank.volumes] == ["v00", "v01", "v02"]
    assert bank.regions == ("brain",) and len(bank.keys) == 6  # 3 axes x coarse, fine
    bank = bank.add(volumes[3:], CALIBRATION | {"voxel_threshold": 0.6})
    bank = bank.remove("v01", CALIBRATION | {"voxel_threshold": 0.7})
    assert not (root / "volumes" / "v01").exists()
    reopened = ReferenceBank.open(root)
    assert [v.id for v in reopened.volumes] == ["v00", "v02", "v03", "v04"]
    assert reopened.calibration["voxel_threshold"] == 0.7
    kept = [volumes[i] for i in (0, 2, 3, 4)]
    for key in reopened.keys:
        for stored, original in zip(reopened.token_sets("brain", key), kept, strict=True):
            want = original.tokens["brain"][key]
            np.testing.assert_allclose(stored.features, want.features, atol=2e-3)  # float16
            np.testing.assert_array_equal(stored.cells, want.cells)
            np.testing.assert_array_equal(stored.grid.edges, want.grid.edges)
            if want.parents is not None:
                np.testing.assert_array_equal(stored.parents, want.parents)
    np.testing.assert_array_equal(reopened.mask("v03", "brain"), volumes[3].masks["brain"])
    text = "\n".join(reopened.describe())
    assert "volumes: 4" in text and "2026-01-01 to 2026-05-01" in text and "  v04  " in text
    assert not [p for p in tmp_path.iterdir() if p.name != "bank"]  # no staging left behind


def test_a_new_study_scored_against_the_bank_as_in_a_batch(volumes, tmp_path):
    bank = ReferenceBank.create(tmp_path / "bank", IDENTITY, volumes[:4], CALIBRATION)
    new = volumes[4].tokens["brain"]
    for key in bank.keys:
        stored = [t.features for t in bank.token_sets("brain", key)]
        query = new[key].features.astype(np.float16)  # the batch would hold it as float16 too
        (got,) = mutual_scores([query, *stored], rho=0.5, n_references=4)
        want = mutual_scores([*stored, query], rho=0.5)[-1]
        # one block computed as (query, bank) here and (bank, query) there: float32 rounding
        # (tests/conftest.py) moves a distance near 0 most; nearly all tokens agree to 1e-5
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=DISTANCE_ATOL)
        assert np.isclose(got, want, rtol=1e-5, atol=1e-5).mean() > 0.98


def test_other_settings_are_refused_by_name(volumes, tmp_path):
    bank = ReferenceBank.create(tmp_path / "bank", IDENTITY, volumes[:2], CALIBRATION)
    bank.check(json.loads(json.dumps(IDENTITY)))
    other = IDENTITY | {"encoder": "histogram-p14", "tokens": {"dim": 32, "q": [14, 2]}}
    with pytest.raises(BankMismatch, match="encoder: bank 'pixels-p14', this run 'histogram-p14'"):
        bank.check(other)
    with pytest.raises(BankMismatch, match="tokens.dim: bank 16, this run 32"):
        bank.check(other)


def test_damaged_or_foreign_banks_are_refused_with_a_reason(volumes, tmp_path):
    with pytest.raises(BankError, match="not a readable reference bank"):
        ReferenceBank.open(tmp_path / "nowhere")
    root = tmp_path / "bank"
    ReferenceBank.create(root, IDENTITY, volumes[:2], CALIBRATION)
    manifest = json.loads((root / "bank.json").read_text())
    (root / "bank.json").write_text(json.dumps(manifest | {"version": 3}))
    with pytest.raises(BankError, match="version 3 bank; this program reads versions 1, 2"):
        ReferenceBank.open(root)
    (root / "bank.json").write_text(json.dumps(manifest | {"format": "something else"}))
    with pytest.raises(BankError, match="is not a cs3f-reference-bank manifest"):
        ReferenceBank.open(root)
    (root / "bank.json").write_text(json.dumps(manifest))
    features = min((root / "volumes" / "v01" / "brain").glob("*fine.features.npy"))
    features.write_bytes(features.read_bytes()[:-100])  # cut short, as by a full disk
    with pytest.raises(BankError, match="volume v01 .brain. is damaged"):
        ReferenceBank.open(root)
    ReferenceBank.create(tmp_path / "again", IDENTITY, volumes[:2], CALIBRATION)
    mask = tmp_path / "again" / "volumes" / "v00" / "brain" / "mask.npz"
    mask.write_bytes(mask.read_bytes()[:-50])
    with pytest.raises(BankError, match="volume v00 .brain. is damaged"):
        ReferenceBank.open(tmp_path / "again")


def test_misuse_is_refused_and_leaves_nothing_half_written(volumes, tmp_path):
    root = tmp_path / "bank"
    with pytest.raises(BankError, match="v00 is already in the bank"):
        ReferenceBank.create(root, IDENTITY, [volumes[0], volumes[0]], CALIBRATION)
    assert list(tmp_path.iterdir()) == []  # the staging folder went with the failure
    with pytest.raises(BankError, match="at least 2 volumes .* got 1"):
        ReferenceBank.create(root, IDENTITY, volumes[:1], CALIBRATION)
    bank = ReferenceBank.create(root, IDENTITY, volumes[:2], CALIBRATION)
    with pytest.raises(BankError, match="already exists"):
        ReferenceBank.create(root, IDENTITY, volumes[2:4], CALIBRATION)
    with pytest.raises(BankError, match="no volume 'v09'"):
        bank.remove("v09", CALIBRATION)
    with pytest.raises(BankError, match="keeps at least 2 volumes"):
        bank.remove("v00", CALIBRATION)
    with pytest.raises(BankError, match="not a safe name"):
        bank.add([NewVolume("../x", volumes[2].tokens, volumes[2].masks)], CALIBRATION)
    assert [v.id for v in ReferenceBank.open(root).volumes] == ["v00", "v01"]


def _coarse_only(volume: NewVolume) -> NewVolume:
    sets = {k: t for k, t in volume.tokens["brain"].items() if k.level == "coarse"}
    return NewVolume(volume.id, {"brain": sets}, volume.masks, volume.study_date)


def test_the_index_round_trip_and_add_and_remove_drop_it(volumes, tmp_path):
    root = tmp_path / "bank"
    bank = ReferenceBank.create(root, IDENTITY, [_coarse_only(v) for v in volumes[:4]], CALIBRATION)
    assert bank.index is None and bank.layouts == {}
    layouts = {
        ("brain", key): train_ivf([t.features for t in bank.token_sets("brain", key)], 1)
        for key in bank.keys
    }
    bank = bank.with_index(layouts, 0.98)
    reopened = ReferenceBank.open(root)
    assert reopened.index == "0001" and set(reopened.layouts) == set(layouts)
    for where, layout in layouts.items():
        stored = reopened.layouts[where]
        np.testing.assert_array_equal(stored.lists, layout.lists)
        np.testing.assert_array_equal(stored.centroids, layout.centroids)
        assert (stored.nprobe, stored.recall, stored.k) == (layout.nprobe, layout.recall, 1)
        features = [t.features for t in reopened.token_sets(*where)]
        query = volumes[4].tokens["brain"][where[1]].features
        exhaustive = VolumeTokenIndex.ivf(features, stored, nprobe=stored.nlist)
        np.testing.assert_allclose(
            exhaustive.scores(query, 2), VolumeTokenIndex.flat(features).scores(query, 2), 1e-5
        )
    assert "index: 0001" in "\n".join(reopened.describe())
    again = reopened.with_index(layouts, 0.98)  # a new generation replaces the old
    assert again.index == "0002" and sorted(os.listdir(root / "index")) == ["0002"]
    added = again.add([_coarse_only(volumes[4])], CALIBRATION)
    assert added.index is None and added.layouts == {} and os.listdir(root / "index") == []
    removed = added.with_index(
        {w: train_ivf([t.features for t in added.token_sets(*w)], 1) for w in layouts}, 0.98
    ).remove("v00", CALIBRATION)
    assert removed.index is None and ReferenceBank.open(root).index is None


def _indexed(root, volumes):
    """A bank of ``volumes`` (coarse tokens) with an index of its first key."""
    bank = ReferenceBank.create(root, IDENTITY, [_coarse_only(v) for v in volumes], CALIBRATION)
    key = bank.keys[0]
    layout = train_ivf([t.features for t in bank.token_sets("brain", key)], 1)
    return bank.with_index({("brain", key): layout}, 0.98), layout


def test_a_damaged_index_is_refused_and_can_be_rebuilt(volumes, tmp_path):
    root = tmp_path / "bank"
    bank, layout = _indexed(root, volumes[:3])
    folder = root / "index" / "0001"
    lists = min(folder.glob("*.lists.npy"))
    whole = lists.read_bytes()
    lists.write_bytes(whole[:-40])  # cut short
    with pytest.raises(BankError, match="the index of .* is damaged .*`bank index` rebuilds it"):
        ReferenceBank.open(root)
    lists.unlink()  # missing
    with pytest.raises(BankError, match="the index of .* is damaged"):
        ReferenceBank.open(root)
    lists.write_bytes(whole)
    index = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps(index | {"volumes": ["v00", "v01"]}))
    with pytest.raises(BankError, match="covers other volumes than the bank's"):
        ReferenceBank.open(root)
    unread = ReferenceBank.open(root, index=False)  # what `bank index` opens, to rebuild
    assert unread.index == "0001" and unread.layouts == {}
    rebuilt = unread.with_index({("brain", bank.keys[0]): layout}, 0.98)
    assert rebuilt.index == "0002" and os.listdir(root / "index") == ["0002"]
    assert set(ReferenceBank.open(root).layouts) == {("brain", bank.keys[0])}


def test_an_index_that_does_not_fit_is_never_stored(volumes, tmp_path):
    root = tmp_path / "bank"
    bank, layout = _indexed(root, volumes[:3])
    manifest = (root / "bank.json").read_bytes()
    short = dataclasses.replace(layout, lists=layout.lists[:-1])
    wide = dataclasses.replace(layout, centroids=np.zeros((layout.nlist, 3), np.float32))
    for bad in (short, wide):
        with pytest.raises(BankError, match="does not fit the bank .* does not cover"):
            bank.with_index({("brain", bank.keys[0]): bad}, 0.98)
        assert (root / "bank.json").read_bytes() == manifest  # the bank as it was
        assert os.listdir(root / "index") == ["0001"]  # no staging folder, no 0002
    assert ReferenceBank.open(root).index == "0001"


def test_a_version_1_bank_is_read_without_an_index_and_written_as_version_2(volumes, tmp_path):
    root = tmp_path / "bank"
    ReferenceBank.create(root, IDENTITY, [_coarse_only(v) for v in volumes[:3]], CALIBRATION)
    manifest = json.loads((root / "bank.json").read_text())
    del manifest["index"]
    (root / "bank.json").write_text(json.dumps(manifest | {"version": 1}))
    old = ReferenceBank.open(root)
    assert (old.version, old.index, old.layouts) == (1, None, {})
    assert "version 1)" in old.describe()[0]
    added = old.add([_coarse_only(volumes[3])], CALIBRATION)
    assert added.version == 2 and json.loads((root / "bank.json").read_text())["version"] == 2
    assert "version 2)" in added.describe()[0]


def test_a_new_bank_follows_the_umask(volumes, tmp_path):
    old = os.umask(0o022)
    try:
        bank = ReferenceBank.create(tmp_path / "bank", IDENTITY, volumes[:2], CALIBRATION)
    finally:
        os.umask(old)
    assert oct((tmp_path / "bank").stat().st_mode & 0o777) == oct(0o755)
    assert oct((bank.root / "bank.json").stat().st_mode & 0o777) == oct(0o644)


def test_auto_searches_the_stored_index_of_a_large_variant_c_bank_only():
    key = TokenKey(0, "hist", "coarse")
    layout = IvfLayout(np.zeros((2, 4), np.float32), np.zeros(4, np.int32), 1, 0.99, 0.0, 50)

    def bank(size=AUTO_IVF_VOLUMES, layouts=None, keys=(key,)):
        layouts = {("brain", key): layout} if layouts is None else layouts
        return SimpleNamespace(
            volumes=[None] * size, layouts=layouts, regions=("brain",), keys=list(keys)
        )

    c = ScoringSettings(variant="C")
    assert bank_search(bank(), c) == "ivf"
    assert bank_search(bank(AUTO_IVF_VOLUMES - 1), c) == "pairwise"  # exact is fast enough
    assert bank_search(bank(layouts={}), c) == "pairwise"  # no stored index (version 1, say)
    low = dataclasses.replace(layout, recall=RECALL_TARGET - 0.01)
    assert bank_search(bank(layouts={("brain", key): low}), c) == "pairwise"
    assert bank_search(bank(keys=(key, key._replace(axis=1))), c) == "pairwise"  # one axis lacks it
    assert bank_search(bank(), ScoringSettings(variant="MS")) == "pairwise"
    assert bank_search(bank(), dataclasses.replace(c, bank_index="flat")) == "flat"
    assert bank_search(bank(layouts={}), dataclasses.replace(c, bank_index="ivf")) == "ivf"
