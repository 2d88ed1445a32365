"""`folder`: the files of a directory on the server, recursively.

Config: `{"path": "/srv/handbook", "include": ["*.md", "*.pdf"], "exclude": ["drafts/*"]}`. The
path must lie under one of FOLDER_SOURCE_ROOTS (after resolving symbolic links, so a link
cannot lead out of them). A pattern without "/" is matched against a file's name (and, for
`exclude`, against each folder on its way too, so ".*" leaves hidden folders out); one with "/"
against the path relative to the folder (fnmatch: "*" also crosses "/"). The external id is that
relative path; the change marker mtime + size, so an unchanged file is never read. The watcher
(ingestion/connectors/watch.py) follows changes live; this listing is the full sync beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from ingestion.connectors.base import ConfigInvalid, Connector, Fetched, Item, ItemFailed, SourceUnavailable, connector

# Editors' and systems' scratch files: never documents.
DEFAULT_EXCLUDE = [".*", "*~", "*.swp", "*.tmp", "__pycache__"]


def folder_roots() -> list[Path]:
    return [Path(root).expanduser().resolve() for root in settings.FOLDER_SOURCE_ROOTS if root]


def _patterns(config: dict[str, Any], key: str, errors: dict[str, list[str]], default: list[str]) -> list[str]:
    value = config.get(key, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        errors.setdefault(key, []).append('must be a list of glob patterns, e.g. ["*.md", "docs/*"].')
        return default
    return [p.strip() for p in value]


def _matches(relative: PurePosixPath, pattern: str, *, folders_too: bool) -> bool:
    if "/" in pattern:
        return fnmatchcase(relative.as_posix(), pattern.lstrip("/"))
    names = relative.parts if folders_too else relative.parts[-1:]
    return any(fnmatchcase(name, pattern) for name in names)


@connector
class FolderConnector(Connector):
    kind = "folder"
    keys = {"path": True, "include": False, "exclude": False}

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        config = super().config_clean(config)
        errors: dict[str, list[str]] = {}
        path = config["path"]
        roots = folder_roots()
        shown = ", ".join(str(root) for root in roots) or "none"
        if not isinstance(path, str) or not os.path.isabs(os.path.expanduser(path)):
            errors["path"] = ["must be an absolute path on the server, e.g. /srv/handbook."]
        else:
            resolved = Path(path).expanduser().resolve()
            if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
                errors["path"] = [f"{resolved} is outside the folders Freshet may read (FOLDER_SOURCE_ROOTS: {shown}); "
                                  "choose a folder below one of them or ask an administrator to add a root."]
            elif not resolved.is_dir():
                errors["path"] = [f"{resolved} is not a folder on the server (or Freshet may not read it)."]
            else:
                config["path"] = str(resolved)
        config["include"] = _patterns(config, "include", errors, ["*"])
        config["exclude"] = _patterns(config, "exclude", errors, list(DEFAULT_EXCLUDE))
        if errors:
            raise ConfigInvalid(errors)
        return config

    # --- Listing and fetching ---------------------------------------------------------------

    @staticmethod
    def root(source) -> Path:
        return Path(source.config.get("path", "")).expanduser().resolve()

    def wanted(self, source, relative: PurePosixPath) -> bool:
        """Whether the file at `relative` (to the source's folder) is one of its documents."""
        include = source.config.get("include") or ["*"]
        exclude = source.config.get("exclude", DEFAULT_EXCLUDE)
        if any(_matches(relative, pattern, folders_too=True) for pattern in exclude):
            return False
        return any(_matches(relative, pattern, folders_too=False) for pattern in include)

    def item_at(self, source, path: Path) -> Item | None:
        """The item for the file at `path`, None if it is not one of the source's documents (gone,
        not a regular file, excluded, or a link leading out of the folder)."""
        root = self.root(source)
        try:
            relative = PurePosixPath(path.relative_to(root).as_posix())
        except ValueError:
            return None
        if not self.wanted(source, relative):
            return None
        try:
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                return None
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        return Item(external_id=relative.as_posix(), marker=f"{stat.st_mtime_ns}:{stat.st_size}", uri=path.as_uri())

    def items(self, source) -> Iterator[Item]:
        root = self.root(source)
        if not root.is_dir():
            raise SourceUnavailable(f"The folder {root} does not exist or cannot be read.")

        def unreadable(error: OSError) -> None:
            # A folder that vanished or cannot be read mid-walk: the listing is not whole, so
            # the sync must fail rather than prune what it could not see.
            raise SourceUnavailable(f"Part of the folder could not be read: {error}")

        exclude = source.config.get("exclude", DEFAULT_EXCLUDE)
        for directory, folders, files in os.walk(root, onerror=unreadable):
            here = Path(directory)
            # Excluded folders are not walked at all (a .git or node_modules costs nothing).
            folders[:] = sorted(
                name for name in folders
                if not any(_matches(PurePosixPath((here / name).relative_to(root).as_posix()), pattern,
                                    folders_too=True) for pattern in exclude)
            )
            for name in sorted(files):
                item = self.item_at(source, here / name)
                if item is not None:
                    yield item

    def fetch(self, source, item: Item, *, document=None) -> Fetched:
        root = self.root(source)
        path = root / item.external_id
        try:
            if not path.resolve().is_relative_to(root):
                raise ItemFailed(f"{item.external_id} leads out of the folder {root}.")
            stat = path.stat()
            if stat.st_size > settings.MAX_UPLOAD_BYTES:
                raise ItemFailed(f"{stat.st_size:,} bytes is over MAX_UPLOAD_BYTES ({settings.MAX_UPLOAD_BYTES:,}).")
            content = path.read_bytes()
        except FileNotFoundError:
            raise ItemFailed(f"{path} is gone (removed while the sync ran).") from None
        except OSError as error:
            raise ItemFailed(f"{path} cannot be read: {error.strerror or error}.") from None
        return Fetched(content=content, marker=f"{stat.st_mtime_ns}:{stat.st_size}", uri=path.as_uri(),
                       filename=path.name)
