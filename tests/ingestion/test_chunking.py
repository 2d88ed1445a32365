from ingestion.chunking import chunks_split
from ingestion.embedding import embedder


def test_chunks_fit_the_token_budget_counted_by_the_models_tokenizer():
    model = embedder()
    text = "\n\n".join(f"Section {i}. " + "The glacier retreated two metres this summer. " * 12 for i in range(8))
    chunks = chunks_split(text, embedder=model, size=64, overlap=16)
    assert len(chunks) > 8
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(0 < c.token_count <= 64 for c in chunks)
    assert all(c.token_count == len(model.tokenizer.encode(c.text, add_special_tokens=False)) for c in chunks)
    # Every sentence of the text survives somewhere in the chunks.
    assert all(f"Section {i}." in " ".join(c.text for c in chunks) for i in range(8))


def test_neighbouring_chunks_overlap():
    model = embedder()
    text = " ".join(f"w{i}" for i in range(600))
    chunks = chunks_split(text, embedder=model, size=50, overlap=20)
    assert len(chunks) > 2
    for left, right in zip(chunks, chunks[1:], strict=False):
        assert set(left.text.split()) & set(right.text.split())


def test_a_size_beyond_the_models_window_is_capped():
    model = embedder()
    text = "word " * 2000
    chunks = chunks_split(text, embedder=model, size=10_000, overlap=0)
    assert max(c.token_count for c in chunks) <= model.max_tokens - 2
