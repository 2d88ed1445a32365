"""The folder kind (ingestion/connectors/folder.py): its configuration check, what it lists and
what it reads, on real folders under the system's temporary directory."""

from __future__ import annotations

import os

import pytest

from ingestion.connectors import ConfigInvalid, config_clean
from ingestion.connectors.base import ItemFailed, connector_for
from ingestion.connectors.folder import FolderConnector
from ingestion.models import Source


class _Source:
    """What the connector reads of a source: its kind and config (no database needed)."""

    kind = Source.Kind.FOLDER

    def __init__(self, **config):
        self.config = config_clean("folder", config)


def listed(source) -> dict[str, str]:
    return {item.external_id: item.marker for item in connector_for("folder").items(source)}


def test_it_accepts_a_folder_under_the_roots_and_normalises_it(folder):
    config = config_clean("folder", {"path": f"{folder}/../handbook/", "include": "*.md"})
    assert config == {"path": str(folder.resolve()), "include": ["*.md"],
                      "exclude": [".*", "*~", "*.swp", "*.tmp", "__pycache__"]}


@pytest.mark.parametrize(("config", "key", "message"), [
    ({}, "path", "is required for a folder source"),
    ({"path": "relative/dir"}, "path", "must be an absolute path"),
    ({"path": "/etc"}, "path", "outside the folders Freshet may read (FOLDER_SOURCE_ROOTS"),
    ({"path": "/srv/../etc"}, "path", "/etc is outside the folders"),
    ({"path": "{folder}", "url": "https://example.org/"}, "url", "unknown key for a folder source"),
    ({"path": "{folder}/missing"}, "path", "is not a folder on the server"),
    ({"path": "{folder}", "include": [3]}, "include", "must be a list of glob patterns"),
    ({"path": "{folder}", "exclude": {"a": 1}}, "exclude", "must be a list of glob patterns"),
])
def test_it_refuses_bad_configurations_with_a_message(folder, config, key, message):
    config = {name: value.replace("{folder}", str(folder)) if isinstance(value, str) else value
              for name, value in config.items()}
    with pytest.raises(ConfigInvalid) as refused:
        config_clean("folder", config)
    assert message in " ".join(refused.value.errors[key])


def test_a_symbolic_link_cannot_lead_out_of_the_roots(folder, settings):
    settings.FOLDER_SOURCE_ROOTS = [str(folder)]
    (folder / "inside").mkdir()
    os.symlink("/etc", folder / "inside/etc")
    assert config_clean("folder", {"path": str(folder / "inside")})["path"] == str(folder / "inside")
    with pytest.raises(ConfigInvalid, match="/etc is outside"):
        config_clean("folder", {"path": str(folder / "inside/etc")})


def test_it_lists_recursively_with_include_and_exclude_and_mtime_size_markers(folder):
    for name in ("a.md", "docs/b.md", "docs/drafts/c.md", "d.txt", ".hidden.md", ".git/config.md", "e.md~"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)

    everything = listed(_Source(path=str(folder)))
    only_md = listed(_Source(path=str(folder), include=["*.md"], exclude=["docs/drafts/*", ".*"]))

    assert sorted(everything) == ["a.md", "d.txt", "docs/b.md", "docs/drafts/c.md"]
    assert sorted(only_md) == ["a.md", "docs/b.md"]
    stat = (folder / "a.md").stat()
    assert everything["a.md"] == f"{stat.st_mtime_ns}:{stat.st_size}"


def test_links_to_files_outside_the_folder_are_not_listed_nor_read(folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the index")
    (folder / "inside.txt").write_text("fine")
    os.symlink(secret, folder / "link.txt")
    source = _Source(path=str(folder))

    assert sorted(listed(source)) == ["inside.txt"]
    item = FolderConnector().item_at(source, folder / "inside.txt")
    with pytest.raises(ItemFailed, match="leads out of the folder"):
        connector_for("folder").fetch(source, item.__class__(external_id="link.txt"))
    with pytest.raises(ItemFailed, match="leads out of the folder"):
        connector_for("folder").fetch(source, item.__class__(external_id="../secret.txt"))


def test_it_reads_a_file_with_its_marker_and_name(folder):
    (folder / "a.md").write_text("# A")
    source = _Source(path=str(folder))
    item = FolderConnector().item_at(source, folder / "a.md")

    fetched = connector_for("folder").fetch(source, item)

    assert (fetched.content, fetched.marker, fetched.filename) == (b"# A", item.marker, "a.md")
    assert fetched.uri == (folder / "a.md").as_uri()
    (folder / "a.md").unlink()
    with pytest.raises(ItemFailed, match="is gone"):
        connector_for("folder").fetch(source, item)
