"""What reconciliation and rebuilds need of the Elasticsearch engine: the listing of every chunk
held, and generations (SearchIndex.generation_*). A rebuild fills `<alias>-gN+1` under the
building alias `<alias>-next`; the switch moves the alias in one `_aliases` request, so every
search and write after it reaches the new generation, and the old one is deleted after a grace.
Each generation's model is in its mapping's `_meta`. A mixin of ElasticsearchIndex, which holds
the client and the state (`alias`, `_dimension`, `_fields_ready`, `_lock`)."""

from __future__ import annotations

import time

from elasticsearch import NotFoundError

import ingestion.search_index.base as base
from ingestion.search_index.base import SearchIndex
from ingestion.search_index.elasticsearch_errors import classified
from ingestion.search_index.elasticsearch_mapping import FIRST_GENERATION, generation_index


class ElasticsearchGenerations:
    @classified
    def chunks_listed(self, *, source_id: int | None = None) -> dict[str, base.HeldChunk]:
        query = {"match_all": {}} if source_id is None else {"term": {"source_id": int(source_id)}}
        return {row["_id"]: base.HeldChunk(int(row["_source"]["document_id"]), int(row["_source"]["source_id"]),
                                           int(row["_source"]["version"]))
                for row in self._listed(query, ["document_id", "source_id", "version"])}

    @classified
    def index_model(self) -> str | None:
        try:
            mappings = self._es().indices.get_mapping(index=self.alias)
        except NotFoundError:
            return None
        return next((meta["model"] for index in mappings.values()
                     if (meta := index["mappings"].get("_meta") or {}).get("model")), None)

    @classified
    def index_model_set(self, model: str) -> None:
        self._es().indices.put_mapping(index=self.alias, meta={"model": model})

    def _building_alias(self) -> str:
        return f"{self.alias}-next"

    @classified
    def generation_begin(self) -> SearchIndex:
        es = self._es()
        number = (self.generation() or FIRST_GENERATION) + 1
        concrete = generation_index(self.alias, number)
        es.indices.delete(index=concrete, ignore_unavailable=True)  # what an aborted rebuild left
        return type(self)(self.url, self._building_alias(), self.timeout, first_index=concrete)

    @classified
    def generation_switch(self, building: SearchIndex, *, model: str, grace_seconds: float = 2.0) -> None:
        if not isinstance(building, type(self)) or building.alias != self._building_alias():
            raise ValueError("Not a generation of this index: use generation_begin().")
        es = self._es()
        try:
            old = sorted(es.indices.get_alias(name=self.alias))
        except NotFoundError:
            old = []
        new = sorted(es.indices.get_alias(name=building.alias))
        building.index_model_set(model)
        # One request: every search and write after it reaches the new generation.
        actions = ([{"remove": {"index": index, "alias": self.alias}} for index in old]
                   + [{"add": {"index": index, "alias": self.alias}} for index in new]
                   + [{"remove": {"index": index, "alias": building.alias}} for index in new])
        es.indices.update_aliases(actions=actions)
        with self._lock:
            self._dimension, self._fields_ready = None, False
        time.sleep(max(0.0, grace_seconds))
        gone = [index for index in old if index not in new]
        if gone:
            es.indices.delete(index=gone, ignore_unavailable=True)
