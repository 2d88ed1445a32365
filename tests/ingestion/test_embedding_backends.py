"""Encoder backends (ingestion/encoders.py): each one's vectors against fp32 torch's, which
backends are another model identity and how a mismatch with the index is refused, and the
exported graph made once per weights and reused."""

from __future__ import annotations

import numpy as np
import pytest
from django.conf import settings

from ingestion import embedding, encoders
from ingestion.embedding import Embedder, EmbeddingModelMismatch, index_model_check
from ingestion.search_index.lancedb_engine import LanceDBIndex

TEXTS = [
    "Glaciers retreat when summer melt exceeds winter snowfall.",
    "The salmon return upstream to spawn in the river where they hatched.",
    "Vitamin D deficiency is associated with a higher risk of fractures in older adults.",
    "A fjord is a long, narrow inlet with steep sides, created by a glacier.",
    "Short.",
]
# Longer than the packaged tokenizer.json's 128 tokens, shorter than the model's 256-token window.
LONG = " ".join(f"word{i} glacier river" for i in range(60))


@pytest.fixture(scope="module")
def fp32() -> Embedder:
    return Embedder(backend="torch")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(("backend", "floor"), [("torch-bf16", 0.999), ("openvino", 0.9999), ("onnx-int8", 0.98)])
def test_it_encodes_like_fp32_torch(fp32: Embedder, backend: str, floor: float) -> None:
    reference = fp32.encode(TEXTS + [LONG])
    vectors = Embedder(backend=backend).encode(TEXTS + [LONG])

    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert cosines(vectors, reference).min() >= floor


def test_the_graph_backends_read_the_models_whole_window_not_128_tokens() -> None:
    model = Embedder(backend="openvino")
    base = model.encode([LONG])[0]
    tail_changed = model.encode([LONG + " completely different words about volcanoes and lava"])[0]

    assert model.max_tokens == 256
    assert 128 < model.count_tokens(LONG) < 250
    assert float(base @ tail_changed) < 0.9999  # the words past token 128 count


def test_backends_with_fp32_vectors_share_an_identity_and_int8_is_another_model() -> None:
    name = "sentence-transformers/all-MiniLM-L6-v2"
    assert {Embedder(backend=b).identity for b in ("auto", "torch", "torch-bf16", "openvino")} == {name}
    assert Embedder(backend="onnx-int8").identity == f"{name}+int8"
    assert Embedder(backend="auto").backend in ("openvino", "torch")  # never one that changes the vectors
    with pytest.raises(ValueError, match="Unknown embedding backend"):
        Embedder(backend="onnx-fp16")


def test_an_index_records_the_model_of_its_first_write_and_refuses_another(tmp_path, monkeypatch) -> None:
    index = LanceDBIndex(tmp_path / "lancedb")
    monkeypatch.setattr(embedding, "_held_model", None)
    monkeypatch.setattr(embedding, "_embedder", Embedder(backend="openvino"))
    index_model_check(index)  # nothing recorded: nothing to refuse, nothing recorded by a reader
    assert index.index_model() is None

    index_model_check(index, record=True)
    assert index.index_model() == "sentence-transformers/all-MiniLM-L6-v2"

    monkeypatch.setattr(embedding, "_held_model", None)
    monkeypatch.setattr(embedding, "_embedder", Embedder(backend="torch"))
    index_model_check(index)  # the same vectors: the same index serves

    monkeypatch.setattr(embedding, "_held_model", None)
    monkeypatch.setattr(embedding, "_embedder", Embedder(backend="onnx-int8"))
    with pytest.raises(EmbeddingModelMismatch, match="manage.py index_rebuild") as refused:
        index_model_check(index)
    assert refused.value.status == 503 and "all-MiniLM-L6-v2+int8" in refused.value.message


def test_the_exported_graph_is_made_once_per_weights_and_reused(monkeypatch) -> None:
    path = Embedder(backend="torch").path
    cache_dir = settings.EMBEDDING_EXPORT_DIR
    first = encoders.graph_files(path, cache_dir, kind="int8")
    made = first.stat().st_mtime_ns
    exports: list[str] = []
    monkeypatch.setattr(encoders, "_export", lambda *args: exports.append("export"))
    monkeypatch.setattr(encoders, "_quantise", lambda *args: exports.append("quantise"))

    again = encoders.graph_files(path, cache_dir, kind="int8")
    Embedder(backend="onnx-int8").encode(["reused"])

    assert again == first and again.stat().st_mtime_ns == made and exports == []
    assert first.parent.name == encoders.cached_weights_hash(path, cache_dir)


def test_the_cache_key_follows_the_weights(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights one")
    (folder / "config.json").write_text("{}")
    first = encoders.cached_weights_hash(str(folder), tmp_path / "cache")

    (folder / "model.safetensors").write_bytes(b"weights two")

    assert encoders.cached_weights_hash(str(folder), tmp_path / "cache") != first
    with pytest.raises(encoders.BackendUnavailable, match="No weights"):
        encoders.weights_hash(str(tmp_path))


def test_a_process_that_chunks_and_embeds_on_a_graph_backend_never_imports_torch(tmp_path) -> None:
    """torch is a quarter of a GiB of a worker's memory: with OpenVINO, chunking (the token
    counts) and embedding go through `tokenizers` and the runtime alone."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, django; django.setup()\n"
        "from ingestion.chunking import chunks_split\n"
        "from ingestion.embedding import Embedder\n"
        "model = Embedder(backend='openvino')\n"
        f"chunks = chunks_split({LONG!r} * 4, embedder=model, size=100, overlap=10)\n"
        "assert len(chunks) > 1 and all(c.token_count <= 100 for c in chunks), chunks\n"
        "model.encode([c.text for c in chunks])\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", "FRESHET_VAR_DIR": str(tmp_path),
           "EMBEDDING_EXPORT_DIR": str(settings.EMBEDDING_EXPORT_DIR)}
    done = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
