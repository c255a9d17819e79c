import numpy as np
import pytest

from melody_edge.runtime.rng import STREAM_NOISE, STREAM_TOKENS, PortableRng
from melody_edge.runtime.sampling import sample_token


def test_rng_is_counter_based_and_reproducible():
    a = PortableRng(7, STREAM_NOISE)
    first = a.uniform(10)
    b = PortableRng(7, STREAM_NOISE)
    # Drawing in pieces gives the same numbers as drawing at once.
    assert np.array_equal(np.concatenate([b.uniform(3), b.uniform(7)]), first)
    assert not np.array_equal(PortableRng(7, STREAM_TOKENS).uniform(10), first)
    assert not np.array_equal(PortableRng(8, STREAM_NOISE).uniform(10), first)
    assert ((first >= 0) & (first < 1)).all()


def _splitmix64_reference(x: int) -> int:
    # Written with Python's unbounded ints, independently of the numpy version under test.
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_rng_matches_an_independent_integer_implementation():
    # The Kotlin and Swift cores follow this same definition with wrapping 64-bit arithmetic.
    mask = (1 << 64) - 1
    for seed, stream in [(0, STREAM_TOKENS), (12345, STREAM_NOISE), (2**40 + 3, 7)]:
        key = _splitmix64_reference((seed * 0x100000001B3 + stream * 0xD6E8FEB86659FD93) & mask)
        rng = PortableRng(seed, stream)
        assert rng.key == key
        got = [int(v) for v in rng.next_u64(5)]
        want = [_splitmix64_reference((i * 0x9E3779B97F4A7C15 + key) & mask) for i in range(5)]
        assert got == want
        u = PortableRng(seed, stream).uniform(5)
        assert u.tolist() == [(w >> 11) / 2**53 for w in want]


def test_normals_have_unit_statistics():
    x = PortableRng(1, STREAM_NOISE).normal(200_001)
    assert x.dtype == np.float32 and x.size == 200_001
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01


def test_sample_token_greedy_topk_and_distribution():
    logits = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
    assert sample_token(logits, 0.0, 0, 0.99) == 1
    # top_k = 1 is greedy whatever u is.
    assert {sample_token(logits, 1.0, 1, u) for u in np.linspace(0, 0.999, 50)} == {1}
    # Inverse-CDF sampling matches softmax probabilities.
    u = PortableRng(3, STREAM_TOKENS).uniform(20_000)
    picks = np.bincount([sample_token(logits, 1.0, 0, float(v)) for v in u], minlength=4) / u.size
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert np.allclose(picks, p, atol=0.02)


def test_sample_token_rejects_nan_logits():
    with pytest.raises(FloatingPointError, match="NaN"):
        sample_token(np.array([0.0, np.nan]), 1.0, 0, 0.5)
