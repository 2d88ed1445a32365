"""Token-aware chunking with the embedding model's own tokenizer (langchain-text-splitters)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingestion.embedding import Embedder

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


@dataclass(frozen=True)
class TextChunk:
    ordinal: int
    text: str
    token_count: int


def max_chunk_tokens(embedder: Embedder) -> int:
    """The longest chunk the model reads whole: its window less [CLS] and [SEP]."""
    return embedder.max_tokens - 2


def chunks_split(text: str, *, embedder: Embedder, size: int, overlap: int) -> list[TextChunk]:
    """Split `text` into chunks of at most `size` tokens (as the model counts them), neighbours
    sharing about `overlap` tokens. The size is capped to what the model reads."""
    size = max(16, min(size, max_chunk_tokens(embedder)))
    overlap = max(0, min(overlap, size // 2))
    # The splitter counts every piece when it splits and again when it merges: count each once.
    count = functools.lru_cache(maxsize=None)(embedder.count_tokens)
    whole = text.strip()
    tokens = count(whole) if whole else 0
    if whole and tokens <= size:
        # What the splitter would make of it (a WordPiece count adds up over the whitespace it
        # splits at), without counting every paragraph and sentence: most documents of a
        # corpus of abstracts, notes or messages are one chunk.
        return [TextChunk(ordinal=0, text=whole, token_count=tokens)]
    splitter = RecursiveCharacterTextSplitter(
        length_function=count,  # what from_huggingface_tokenizer counts, any tokenizer
        chunk_size=size,
        chunk_overlap=overlap,
        separators=SEPARATORS,
        keep_separator="end",
        strip_whitespace=True,
    )
    pieces = [piece for piece in splitter.split_text(text) if piece.strip()]
    return [
        TextChunk(ordinal=i, text=piece, token_count=count(piece))
        for i, piece in enumerate(pieces)
    ]
