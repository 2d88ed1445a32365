"""The LanceDB engine's generations (SearchIndex.generation_*): each is a table, `chunks` the
first, `chunks-gN` the Nth, and a pointer file names the one that serves. Every handle that follows
the pointer (the engine built without a fixed `table`) checks it, a `stat`, before each call, and
moves to the new table when a rebuild switched it. Also the listing of every chunk held (for
reconciliation and rebuilds) and dropping the whole index. A mixin of LanceDBIndex, which holds the state
(`path`, `_fixed`, `_name`, `_pointer*`, the table handles)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from functools import cached_property
from typing import Any

from ingestion.search_index.base import HeldChunk, SearchIndex

logger = logging.getLogger(__name__)

TABLE = "chunks"  # generation 1's table; generation N's is chunks-gN
# Which generation serves, and the embedding model it was built with: {"generation": N,
# "table": ..., "model": ...}. Replaced whole (os.replace), so a reader sees the old or the new.
POINTER = "generation.json"


class LanceDBGenerations:
    def _listed(self, columns: list[str], *, where: str | None = None) -> list[dict]:
        """Every row of the serving table (those matching `where`), with these columns only."""
        table = self._open()
        if table is None:
            return []
        query = table.search()
        if where is not None:
            query = query.where(where)
        return query.select(columns).limit(None).to_list()

    def chunks_listed(self, *, source_id: int | None = None) -> dict[str, HeldChunk]:
        rows = self._listed(["id", "document_id", "source_id", "version"],
                            where=None if source_id is None else f"source_id = {int(source_id)}")
        return {row["id"]: HeldChunk(int(row["document_id"]), int(row["source_id"]), int(row["version"]))
                for row in rows}

    def drop(self) -> None:
        with self._lock:
            db = self._db()
            names = set(db.list_tables().tables)
            # The whole index: every generation (and the pointer) when following it, else this table.
            dropping = {self._fixed} if self._fixed else {n for n in names if n == TABLE or n.startswith(f"{TABLE}-g")}
            for name in sorted(dropping & names):
                db.drop_table(name)
            if not self._fixed:
                (self.path / POINTER).unlink(missing_ok=True)
                self._pointer_seen, self._pointer, self._name = None, {}, TABLE
            self._table = self._search_table = None
            self._indexes_ready = False

    @cached_property
    def _pointer_file(self) -> str:
        return str(self.path / POINTER)

    def _pointer_read(self) -> dict[str, Any]:
        """The pointer file's content ({} when there is none: generation 1, the table `chunks`);
        read again only when the file changed (a stat per call: os.stat of a path kept as a str,
        a pathlib join and stat per call were 4% of a search request's Python time)."""
        try:
            stat = os.stat(self._pointer_file)
        except FileNotFoundError:
            self._pointer_seen, self._pointer = None, {}
            return self._pointer
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._pointer_seen:
            with open(self._pointer_file, encoding="utf-8") as pointer:
                self._pointer = json.load(pointer)
            self._pointer_seen = seen
        return self._pointer

    def _pointer_write(self, content: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / f".{POINTER}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(content))
        os.replace(temporary, self.path / POINTER)  # atomic: readers see the old or the new

    def _follow(self) -> None:
        """Switch this handle to the table the pointer names, if a rebuild switched it."""
        if self._fixed:
            return
        name = self._pointer_read().get("table", TABLE)
        if name != self._name:
            with self._lock:
                logger.info("Search index now on table %s (was %s)", name, self._name)
                self._name = name
                self._table = self._search_table = None
                self._indexes_ready = False

    def index_model(self) -> str | None:
        return self._pointer_read().get("model") or None

    def index_model_set(self, model: str) -> None:
        self._pointer_write({**self._pointer_read(), "generation": self.generation() or 1,
                             "table": self._pointer_read().get("table", TABLE), "model": model})

    def generation(self) -> int | None:
        self._follow()
        if self._open() is None:
            return None
        return int(self._pointer_read().get("generation", 1))

    def generation_begin(self) -> SearchIndex:
        number = int(self._pointer_read().get("generation", 1)) + 1
        name = f"{TABLE}-g{number}"
        building = type(self)(self.path, table=name)
        building.drop()  # what an aborted rebuild left
        return building

    def generation_switch(self, building: SearchIndex, *, model: str, grace_seconds: float = 2.0) -> None:
        if not isinstance(building, type(self)) or not building._fixed:
            raise ValueError("Not a generation of this index: use generation_begin().")
        old = self._pointer_read().get("table", TABLE)
        number = int(building._fixed.rsplit("-g", 1)[1])
        self._pointer_write({"generation": number, "table": building._fixed, "model": model})
        self._follow()
        time.sleep(max(0.0, grace_seconds))
        if old != building._fixed:
            with contextlib.suppress(ValueError, FileNotFoundError):
                self._db().drop_table(old)
