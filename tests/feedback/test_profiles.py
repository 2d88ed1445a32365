"""Question profiles (feedback/profiles.py): folding votes, the bytes the index stores, and the
context score retrieval reads from them."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.profiles import QuestionProfile, unit_vector


def basis(i: int, dimension: int = 4) -> np.ndarray:
    return np.eye(dimension, dtype=np.float32)[i]


def test_votes_fold_into_weighted_unit_means_per_side():
    profile = QuestionProfile.from_votes([(1.0, basis(0)), (3.0, basis(1)), (-0.5, basis(2))])

    assert (profile.up, profile.down) == (4.0, 0.5)
    expected = unit_vector([1.0, 3.0, 0.0, 0.0])  # weighted mean of the up-voters' questions
    assert profile.up_question == pytest.approx(expected, abs=1e-6)
    assert profile.down_question == pytest.approx(basis(2))
    assert QuestionProfile.from_votes([]) is None
    assert QuestionProfile.from_votes([(0.0, basis(0))]) is None


def test_encoding_round_trips_and_rejects_what_is_not_a_profile():
    profile = QuestionProfile.from_votes([(1.0, basis(0)), (-1.0, basis(3))])
    raw = profile.encode()

    back = QuestionProfile.decode(raw)

    assert len(raw) == 4 * (2 + 2 * 4)
    assert (back.up, back.down) == (1.0, 1.0)
    assert back.up_question == pytest.approx(basis(0)) and back.down_question == pytest.approx(basis(3))
    assert QuestionProfile.decode(b"") is None
    assert QuestionProfile.decode(b"abc") is None  # not whole float32s
    assert QuestionProfile.decode(np.zeros(3, dtype=np.float32).tobytes()) is None  # no room for vectors


def test_context_score_counts_only_voters_who_asked_something_close():
    profile = QuestionProfile.from_votes([(2.0, basis(0)), (-1.0, basis(1))])
    near_up = unit_vector([0.95, 0.0, 0.31, 0.0])  # cosine 0.95 with the up-voters' question

    same = profile.score(basis(0), threshold=0.7, prior=1.0)
    near = profile.score(near_up, threshold=0.7, prior=1.0)
    down = profile.score(basis(1), threshold=0.7, prior=1.0)
    unrelated = profile.score(basis(3), threshold=0.7, prior=1.0)

    assert same == pytest.approx(2.0 / 3.0)  # (2 - 0) / (2 + 0 + 1)
    assert 0 < near < same  # closeness (0.95 - 0.7) / 0.3 of the full weight
    assert near == pytest.approx(2 * (0.95 - 0.7) / 0.3 / (2 * (0.95 - 0.7) / 0.3 + 1), abs=1e-3)
    assert down == pytest.approx(-0.5)  # (0 - 1) / (0 + 1 + 1)
    assert unrelated == 0.0
    assert profile.score(np.ones(8, dtype=np.float32), threshold=0.7, prior=1.0) == 0.0  # another model's vector
