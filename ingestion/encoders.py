"""The runtimes that turn a sentence-transformers model folder into vectors: `torch` (fp32, the
reference), `torch-bf16` (autocast), `openvino` and `onnx-int8` on an ONNX graph exported here
from the folder with `torch.onnx.export` (no hub access), and `auto`.

Why not sentence-transformers' own `backend="onnx"/"openvino"`: they need optimum, which does not
install beside transformers 5. So the graph is exported from the folder (attention "eager": ONNX
Runtime's BERT fusion matches that graph only), fused and quantised int8 per channel (per-tensor
int8 ruins the vectors: cosine 0.94), and cached under FRESHET_VAR_DIR/encoders/<weights hash>/,
so a changed model never meets an old graph. Every backend pools and normalises as the folder's
modules say (mean or CLS pooling, Normalize), with the folder's window (max_seq_length) and
padding to the longest text of a forward pass (the packaged tokenizer.json pads to 128).

Backends whose vectors equal fp32's (cosine >= 0.9999: torch, torch-bf16, openvino) share an
index; onnx-int8's differ (cosine ~0.995), so it is another model identity (`model_identity`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "torch", "torch-bf16", "openvino", "onnx-int8")
# Backends whose vectors differ from fp32 torch's, with the suffix their model identity gets.
VECTOR_VARIANTS = {"onnx-int8": "int8"}
# Bumped when the export recipe changes, so a cached graph from an older recipe is not reused.
EXPORT_RECIPE = "1"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class BackendUnavailable(RuntimeError):
    """The backend cannot run this model here (a package missing, modules it cannot run)."""


def model_identity(name: str, backend: str) -> str:
    """What a chunk's vectors were made with, as chunks and the index record it: the model's
    name, plus the variant for a backend whose vectors differ from fp32's."""
    variant = VECTOR_VARIANTS.get(backend)
    return f"{name}+{variant}" if variant else name


@cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16() -> bool:
    """Native bf16 arithmetic: without it bf16 is emulated, slower than fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def backend_auto(*, device: str = "cpu") -> str:
    """The fastest backend that keeps the vectors (cosine >= 0.9999 to fp32) on this machine:
    OpenVINO where it is installed (bf16 on CPUs with avx512_bf16/AMX, fp32 elsewhere; measured
    here faster than torch either way, benchmarks/encoders.py), else torch. Never int8 (its
    vectors differ: choosing it is a model change, so it is asked for by name)."""
    if device != "cpu":
        return "torch"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "openvino"


# --- the model folder ---------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def folder_window(path: str) -> int:
    """The model's window in tokens (sentence_bert_config.json's max_seq_length), read without
    loading the model."""
    window = _read_json(Path(path) / "sentence_bert_config.json").get("max_seq_length")
    return int(window) if window else 256


def folder_pipeline(path: str) -> tuple[str, bool]:
    """(pooling, normalise) of a sentence-transformers folder, for the runtimes that do the
    pooling themselves; BackendUnavailable for modules they cannot run (a Dense layer...)."""
    folder = Path(path)
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").exists() else []
    pooling, normalise = "mean", False
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            config = _read_json(folder / module.get("path", "") / "config.json")
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif not config.get("pooling_mode_mean_tokens", True):
                raise BackendUnavailable(f"Pooling {config} is not supported outside torch.")
        elif kind == "Normalize":
            normalise = True
        else:
            raise BackendUnavailable(f"Module {kind} of {path} runs only in torch.")
    return pooling, normalise


def weights_hash(path: str) -> str:
    """SHA-256 of the model's weights (and tokenizer), remembered beside the cache by file size
    and mtime, so a process start does not read 90 MB to find it."""
    folder = Path(path)
    files = [folder / name for name in (*WEIGHT_FILES, "tokenizer.json", "config.json") if (folder / name).exists()]
    if not any(f.name in WEIGHT_FILES for f in files):
        raise BackendUnavailable(f"No weights ({' or '.join(WEIGHT_FILES)}) in {path}.")
    digest = hashlib.sha256(EXPORT_RECIPE.encode())
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def _stamp(path: str) -> str:
    folder = Path(path)
    parts = []
    for name in (*WEIGHT_FILES, "tokenizer.json", "config.json"):
        file = folder / name
        if file.exists():
            stat = file.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{folder.resolve()}|{'|'.join(parts)}"


def cached_weights_hash(path: str, cache_dir: Path) -> str:
    memo = cache_dir / "weights-hashes.json"
    held = _read_json(memo)
    stamp = _stamp(path)
    if stamp in held:
        return held[stamp]
    value = weights_hash(path)
    held[stamp] = value
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(memo, json.dumps(held, indent=1).encode())
    return value


def _write_atomic(target: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=".tmp-") as handle:
        handle.write(data)
    os.replace(handle.name, target)


@contextlib.contextmanager
def _exclusive(folder: Path):
    """One process exports at a time (two worker processes start together); the others wait and
    then find the files."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- export -------------------------------------------------------------------------------
def graph_files(path: str, cache_dir: Path, *, kind: str) -> Path:
    """The cached ONNX graph of `kind` ("fp32": as exported, for OpenVINO; "int8": fused by ONNX
    Runtime's BERT optimizer, then int8 per channel), made on first use."""
    folder = cache_dir / cached_weights_hash(path, cache_dir)
    target = folder / f"model-{kind}.onnx"
    if target.exists():
        return target
    with _exclusive(folder):
        if target.exists():
            return target
        exported = folder / "model-fp32.onnx"
        if not exported.exists():
            _export(path, exported)
        if kind == "int8":
            _quantise(path, exported, target)
    return target


def _export(path: str, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    logger.info("Exporting %s to ONNX at %s", path, target)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in tokenizer.model_input_names]
    sample = tokenizer(["an example sentence", "another, longer example sentence to export"], padding=True,
                       return_tensors="pt")

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in (*names, "last_hidden_state")}
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        written = Path(scratch) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                Hidden(), tuple(sample[name] for name in names), str(written), input_names=names,
                output_names=["last_hidden_state"], dynamic_axes=axes,
                opset_version=17, dynamo=False,
            )
        os.replace(written, target)


def _quantise(path: str, exported: Path, target: Path) -> None:
    """Fuse (attention, LayerNorm, GELU) with ONNX Runtime's BERT optimizer, then quantise the
    MatMuls' weights int8 per output channel; activations are quantised at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fused = Path(scratch) / "fused.onnx"
        optimised = optimize_model(str(exported), model_type="bert",
                                   num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                                   hidden_size=int(getattr(config, "hidden_size", 0) or 0))
        optimised.save_model_to_file(str(fused))
        written = Path(scratch) / "model.onnx"
        # The fused ops (com.microsoft domain) have no shape inference: their outputs are float.
        quantize_dynamic(str(fused), str(written), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(written, target)


# --- runtimes -----------------------------------------------------------------------------
def graph_tokenizer(path: str, *, window: int):
    """The folder's fast tokenizer (the `tokenizers` library alone: no transformers, no torch to
    import, so a one-shot command starts quickly), truncating at the model's window and padding
    to the longest text of a batch: the packaged tokenizer.json truncates and pads at 128."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    padding = tokenizer.padding or {}
    tokenizer.enable_truncation(max_length=window)
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_type_id=padding.get("pad_type_id", 0),
                             pad_token=padding.get("pad_token", "[PAD]"))
    return tokenizer


def _batches(texts: list[str], size: int, length) -> list[list[int]]:
    """Indices of `texts` in forward passes of `size`, longest first (as sentence-transformers
    does): a pass pads to its longest text, so similar lengths together waste the least."""
    order = sorted(range(len(texts)), key=lambda i: -length(texts[i]))
    return [order[i:i + size] for i in range(0, len(order), size)]


class TorchRunner:
    """SentenceTransformer in fp32 (the reference) or under bf16 autocast."""

    def __init__(self, path: str, *, device: str = "cpu", threads: int = 0, bf16: bool = False) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads and device == "cpu":
            torch.set_num_threads(threads)
        self.bf16 = bf16
        self.model = SentenceTransformer(path, device=device)
        self.window = int(self.model.max_seq_length or folder_window(path))
        self.dimension = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], *, batch_size: int) -> np.ndarray:
        import torch

        autocast = (torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        with autocast:
            vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class GraphRunner:
    """The exported graph in OpenVINO (fp32 graph; bf16 inference where the CPU has it) or in
    ONNX Runtime (the fused int8 graph). Tokenises with the folder's fast tokenizer at the
    model's window, padded to the longest text of each pass; pools and normalises in numpy."""

    def __init__(self, path: str, *, backend: str, cache_dir: Path, threads: int = 0) -> None:
        self.pooling, self.normalise = folder_pipeline(path)
        self.window = folder_window(path)
        self.tokenizer = graph_tokenizer(path, window=self.window)
        if backend == "openvino":
            self._run, self.inputs = self._openvino(graph_files(path, cache_dir, kind="fp32"), threads)
        elif backend == "onnx-int8":
            self._run, self.inputs = self._onnxruntime(graph_files(path, cache_dir, kind="int8"), threads)
        else:
            raise BackendUnavailable(f"No graph runtime for {backend!r}.")
        self.dimension = int(self.encode(["dimension probe"], batch_size=1).shape[1])

    @staticmethod
    def _openvino(graph: Path, threads: int):
        try:
            import openvino as ov
        except ImportError as error:
            raise BackendUnavailable("EMBEDDING_BACKEND=openvino needs the openvino package.") from error
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(graph), "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.output(0)

        def run(feed: dict[str, np.ndarray]) -> np.ndarray:
            return request.infer(feed)[output]

        return run, [port.get_any_name() for port in compiled.inputs]

    @staticmethod
    def _onnxruntime(graph: Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendUnavailable("EMBEDDING_BACKEND=onnx-int8 needs the onnxruntime package.") from error
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

        def run(feed: dict[str, np.ndarray]) -> np.ndarray:
            return session.run(None, feed)[0]

        return run, [port.name for port in session.get_inputs()]

    def encode(self, texts: list[str], *, batch_size: int) -> np.ndarray:
        out: np.ndarray | None = None
        for indices in _batches(texts, batch_size, len):
            encoded = self.tokenizer.encode_batch([texts[i] for i in indices])
            columns = {"input_ids": [e.ids for e in encoded], "attention_mask": [e.attention_mask for e in encoded],
                       "token_type_ids": [e.type_ids for e in encoded]}
            feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self.inputs}
            hidden = np.asarray(self._run(feed), dtype=np.float32)
            mask = feed["attention_mask"][..., None].astype(np.float32)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            if self.normalise:
                pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[indices] = pooled
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def runner_for(path: str, *, backend: str, device: str, threads: int, cache_dir: Path):
    """The runtime of `backend` ("auto" resolved by the caller) for the model folder `path`."""
    if backend == "torch":
        return TorchRunner(path, device=device, threads=threads)
    if backend == "torch-bf16":
        return TorchRunner(path, device=device, threads=threads, bf16=True)
    if device != "cpu":
        raise BackendUnavailable(f"EMBEDDING_BACKEND={backend} runs on the CPU only; use torch on {device}.")
    return GraphRunner(path, backend=backend, cache_dir=cache_dir, threads=threads)
