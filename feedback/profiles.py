"""Question profiles: what the people who voted on a chunk were asking.

A vote says "this passage answered (or did not answer) my question", not "this passage is good for
everyone". So besides its feedback score, each voted chunk carries in the search index the
questions behind its votes, folded into a small profile: the weight of its thumbs up and of its
thumbs down (decayed and weighted as for the score, feedback/selectors.py) and the mean unit
embedding of the questions behind each side. Retrieval (chat/retrieval/ranking.py, `apply_feedback`)
then boosts a chunk for a new question by how much the votes of *similar* questions favour it:

    s_up   = up   * closeness(question, up_question)
    s_down = down * closeness(question, down_question)
    context score = (s_up - s_down) / (s_up + s_down + prior)       in (-1, 1)

where closeness is 0 below a cosine `threshold` and rises linearly to 1 at cosine 1. Someone
asking again what a voter asked gets the voters' judgement at nearly full strength; a different
question is left alone, so feedback on one topic does not bend the rankings of another.

The index stores a profile as opaque bytes (`encode`/`decode`): two float32 weights and the two
mean vectors, a zero vector standing for a side without votes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

_HEADER = 2  # float32 values before the vectors: up, down


@dataclass(frozen=True)
class QuestionProfile:
    up: float  # total weight of the counted thumbs up
    down: float  # total weight of the counted thumbs down (already times FEEDBACK_DOWN_WEIGHT)
    up_question: np.ndarray  # unit mean embedding of the up-voters' questions (zeros: none)
    down_question: np.ndarray  # same for the down-voters'

    @classmethod
    def from_votes(cls, votes: Iterable[tuple[float, np.ndarray]]) -> QuestionProfile | None:
        """A profile from (signed weight, question embedding) pairs: a positive weight is a thumbs
        up of that weight, a negative one a thumbs down. None without any vote or embedding."""
        sides: dict[bool, list[tuple[float, np.ndarray]]] = {True: [], False: []}
        dimension = 0
        for weight, vector in votes:
            if weight and vector is not None and len(vector):
                sides[weight > 0].append((abs(float(weight)), np.asarray(vector, dtype=np.float32)))
                dimension = len(vector)
        if not dimension:
            return None

        def fold(pairs: list[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
            total = sum(w for w, _ in pairs)
            if not total:
                return 0.0, np.zeros(dimension, dtype=np.float32)
            mean = sum(w * _unit(v) for w, v in pairs) / total
            return total, _unit(mean)

        up, up_question = fold(sides[True])
        down, down_question = fold(sides[False])
        return cls(up=up, down=down, up_question=up_question, down_question=down_question)

    def encode(self) -> bytes:
        values = np.concatenate([np.array([self.up, self.down], dtype=np.float32),
                                 self.up_question.astype(np.float32), self.down_question.astype(np.float32)])
        return values.tobytes()

    @classmethod
    def decode(cls, raw: bytes | None) -> QuestionProfile | None:
        """The profile stored as `raw`; None for no profile or bytes that are not one."""
        if not raw or len(raw) % 4:
            return None
        values = np.frombuffer(raw, dtype=np.float32)
        dimension, odd = divmod(len(values) - _HEADER, 2)
        if dimension < 1 or odd:
            return None
        return cls(up=float(values[0]), down=float(values[1]),
                   up_question=values[_HEADER:_HEADER + dimension],
                   down_question=values[_HEADER + dimension:])

    def score(self, question: np.ndarray, *, threshold: float, prior: float) -> float:
        """How much the votes of questions like `question` (a unit vector) favour the chunk, in
        (-1, 1); 0 when no voter asked anything close to it."""
        if len(question) != len(self.up_question):
            return 0.0  # profile from another embedding model: ignore until rewritten
        up = self.up * _closeness(float(self.up_question @ question), threshold) if self.up else 0.0
        down = self.down * _closeness(float(self.down_question @ question), threshold) if self.down else 0.0
        if not up and not down:
            return 0.0
        return (up - down) / (up + down + prior)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm else vector.astype(np.float32)


def _closeness(cosine: float, threshold: float) -> float:
    if cosine <= threshold:
        return 0.0
    return min(1.0, (cosine - threshold) / (1.0 - threshold)) if threshold < 1 else 1.0


def unit_vector(vector: Iterable[float]) -> np.ndarray:
    """`vector` as a float32 unit vector (what `QuestionProfile.score` expects)."""
    return _unit(np.asarray(list(vector) if not isinstance(vector, np.ndarray) else vector, dtype=np.float32))
