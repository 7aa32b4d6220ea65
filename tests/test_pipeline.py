"""The batch pipeline on small synthetic cohorts with a planted anomaly."""

import numpy as np
import pytest
from conftest import smooth_volume

from cs3f.encoders import load_encoder
from cs3f.method.batch_scorer import BatchScorer, ScoringSettings
from cs3f.method.store import TokenStore
from cs3f.method.tokens import TokenSettings

LESION = (slice(20, 28), slice(30, 38), slice(10, 18))


def cohort(shape=(48, 56, 40), n=6, lesion_at=2):
    volumes, masks = [], []
    for seed in range(n):
        volume, mask = smooth_volume(shape, seed)
        if seed == lesion_at:
            volume[LESION] = 1.0
        volumes.append(volume)
        masks.append(mask)
    return volumes, masks


@pytest.fixture(scope="module")
def pixels():
    return load_encoder("pixels", device="cpu")


def run(encoder, volumes, masks, tokens, scoring, store=None):
    scorer = BatchScorer(encoder, tokens, scoring, store)
    for volume, mask in zip(volumes, masks):
        scorer.add(volume, mask)
    return scorer.score()


@pytest.mark.parametrize("variant", ["C", "F", "MS"])
def test_planted_lesion_is_found(pixels, variant):
    volumes, masks = cohort()
    result = run(
        pixels,
        volumes,
        masks,
        TokenSettings(q_coarse=8, q_fine=2),
        ScoringSettings(variant=variant, k=2),
    )
    maps = [result.voxel_map(i, m) for i, m in enumerate(masks)]
    scores = [m.max() for m in maps]
    assert int(np.argmax(scores)) == 2
    peak = np.unravel_index(maps[2].argmax(), maps[2].shape)
    assert all(s.start - 3 <= p < s.stop + 3 for p, s in zip(peak, LESION))
    assert maps[2][LESION].mean() > 3 * maps[2][masks[2]].mean()
    assert all(not m[~mask].any() for m, mask in zip(maps, masks))


def test_disk_store_gives_the_memory_result(pixels, tmp_path):
    volumes, masks = cohort(shape=(24, 28, 20), n=4)
    tokens, scoring = TokenSettings(q_coarse=6, q_fine=2), ScoringSettings(k=1)
    in_memory = run(pixels, volumes, masks, tokens, scoring)
    on_disk = run(pixels, volumes, masks, tokens, scoring, TokenStore(tmp_path / "tokens"))
    assert {p.suffixes[-2] for p in (tmp_path / "tokens").iterdir()} == {
        ".features",
        ".cells",
        ".parents",
    }
    for i, mask in enumerate(masks):
        np.testing.assert_allclose(
            on_disk.voxel_map(i, mask), in_memory.voxel_map(i, mask), rtol=5e-3, atol=5e-3
        )
    # MS is the mean of C and F
    ms, c, f = (in_memory.voxel_map(0, masks[0], v) for v in ("MS", "C", "F"))
    np.testing.assert_allclose(ms, (c + f) / 2, rtol=1e-5, atol=1e-6)


def test_feature_level_fusion_on_a_cubic_volume(pixels):
    volumes, masks = cohort(shape=(32, 32, 32), n=4, lesion_at=None)
    volumes[1][8:14, 18:24, 4:10] = 1.0
    result = run(
        pixels,
        volumes,
        masks,
        TokenSettings(q_coarse=2, q_fine=None),
        ScoringSettings(variant="C", fusion="feature", k=1),
    )
    assert [k.axis for k in result.token_scores] == [0]
    assert result.token_scores[next(iter(result.token_scores))][0].shape[0] > 0
    scores = [result.voxel_map(i, m).max() for i, m in enumerate(masks)]
    assert int(np.argmax(scores)) == 1


def test_bad_batches_are_refused(pixels):
    volume, mask = smooth_volume((16, 16, 16), 0)
    scorer = BatchScorer(pixels, TokenSettings(q_coarse=4, q_fine=2))
    with pytest.raises(ValueError, match="empty foreground"):
        scorer.add(volume, np.zeros_like(mask))
    scorer.add(volume, mask)
    with pytest.raises(ValueError, match="at least 2"):
        scorer.score()
    with pytest.raises(ValueError, match="variant 'C'"):
        ScoringSettings(variant="MS", fusion="feature")
    with pytest.raises(ValueError, match="needs fine tokens"):
        BatchScorer(pixels, TokenSettings(q_fine=None), ScoringSettings(variant="F"))
