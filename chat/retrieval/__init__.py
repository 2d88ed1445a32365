"""Retrieval: the chat, the search API, the `search` command and the evaluation all call
`retrieve`, so what is measured is what users get.

Hybrid mode asks the search index for two candidate lists, BM25 over title + text and kNN over
the embedding, both under the caller's access filter, and fuses them (`ranking.fuse`), then
applies the feedback boost (`ranking.apply_feedback`). The modules:

- `ranking`: the fusions and the feedback boost, parameters from settings;
- `query_embedding`: the query's vector, cached and batched across concurrent queries;
- `highlighting`: the passage sentences that contain the query's terms, marked;
- `answerability`: the evidence that a passage answers the question, as a calibrated relevance;
- `selectors`: `retrieve` / `retrieval_run`, and `search_for_user` for the REST endpoint.
"""

from chat.retrieval.highlighting import highlight, query_terms
from chat.retrieval.query_embedding import QueryBatcher, query_vector
from chat.retrieval.ranking import FUSION_METHODS, Fusion, apply_feedback, default_fusion, fuse
from chat.retrieval.selectors import (
    MODES,
    Mode,
    Retrieval,
    SearchResult,
    SourceNotVisible,
    retrieval_run,
    retrieve,
    search_for_user,
)

__all__ = [
    "FUSION_METHODS", "MODES", "Fusion", "Mode", "QueryBatcher", "Retrieval", "SearchResult", "SourceNotVisible",
    "apply_feedback", "default_fusion", "fuse", "highlight", "query_terms", "query_vector", "retrieval_run", "retrieve",
    "search_for_user",
]
