import json

import pytest
from django.core.management import CommandError, call_command

from ingestion.models import Document, Source
from ingestion.services import document_ingest
from tests.factories import GroupFactory, SourceFactory, UserFactory


@pytest.mark.worker
def test_ingest_waits_and_names_each_failed_file(worker, tmp_path, capsys):
    folder = tmp_path / "docs"
    (folder / "nested").mkdir(parents=True)
    (folder / "ok.md").write_text("# Otters\n\nOtters hold hands while sleeping.")
    (folder / "nested" / "also.txt").write_text("Sea otters use rocks as tools.")
    (folder / "nested" / "broken.pdf").write_bytes(b"%PDF-1.5\ngarbage")

    with pytest.raises(CommandError, match="1 of 3 files failed"):
        call_command("ingest", str(folder), "--source", "field-notes", "--wait")
    err = capsys.readouterr().err
    assert "broken.pdf" in err and "PDF is corrupt" in err
    source = Source.objects.get(name="field-notes")
    assert source.public and source.kind == Source.Kind.UPLOAD
    statuses = dict(source.documents.values_list("filename", "status"))
    assert statuses == {"ok.md": "indexed", "also.txt": "indexed", "broken.pdf": "failed"}

    # Ingesting the same file again updates the same document instead of adding one.
    call_command("ingest", str(folder / "ok.md"), "--source", "field-notes", "--wait")
    assert Document.objects.filter(source=source, filename="ok.md").count() == 1

    call_command("search", "otters sleeping", "--k", "2", "--json")
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results and {"document_id", "title", "text", "score"} <= set(results[0])
    assert results[0]["title"] == "Otters"


# --- --as USER: the ownership rule (selectors.document_may_change) -------------------------------
# No --wait, so no worker: the documents stay pending.


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "theirs.md").write_text("# Theirs\n\nWritten by somebody else.")
    (folder / "mine.md").write_text("# Mine\n\nMy own notes.")
    return folder


@pytest.fixture
def handbook(db):
    return SourceFactory(name="handbook")


def _ingest_as(owner, path, source):
    return document_ingest(source=source, external_id=str(path.resolve()), content=b"The original.",
                           filename=path.name, user=owner).document


@pytest.mark.django_db
def test_ingest_as_a_user_records_them_as_the_uploader(notes, handbook):
    UserFactory(username="ada")
    call_command("ingest", str(notes), "--source", "handbook", "--as", "ada")
    assert sorted(handbook.documents.values_list("filename", "uploaded_by__username")) == [
        ("mine.md", "ada"), ("theirs.md", "ada")]


@pytest.mark.django_db
def test_ingest_as_a_user_fails_the_files_they_may_not_change_and_goes_on(notes, handbook, capsys):
    UserFactory(username="ada")
    theirs = _ingest_as(UserFactory(username="grace"), notes / "theirs.md", handbook)

    with pytest.raises(CommandError, match="1 of 2 files failed"):
        call_command("ingest", str(notes), "--source", "handbook", "--as", "ada")

    err = capsys.readouterr().err
    assert f"FAILED {notes / 'theirs.md'}" in err and "uploaded by someone else" in err
    theirs.refresh_from_db()
    assert theirs.version == 1 and theirs.uploaded_by.username == "grace"
    assert handbook.documents.get(filename="mine.md").uploaded_by.username == "ada"


@pytest.mark.django_db
def test_ingest_as_an_editor_or_staff_replaces_any_document(notes, handbook):
    editors = GroupFactory(name="handbook-editors")
    handbook.editor_groups.add(editors)
    UserFactory(username="ada").groups.add(editors)
    UserFactory(username="root", is_staff=True)
    theirs = _ingest_as(UserFactory(username="grace"), notes / "theirs.md", handbook)

    call_command("ingest", str(notes / "theirs.md"), "--source", "handbook", "--as", "ada")
    theirs.refresh_from_db()
    assert theirs.version == 2 and theirs.uploaded_by.username == "grace"

    (notes / "theirs.md").write_text("Changed by staff.")
    call_command("ingest", str(notes / "theirs.md"), "--source", "handbook", "--as", "root")
    theirs.refresh_from_db()
    assert theirs.version == 3


@pytest.mark.django_db
def test_ingest_without_as_acts_as_the_system(notes, handbook):
    theirs = _ingest_as(UserFactory(username="grace"), notes / "theirs.md", handbook)

    call_command("ingest", str(notes), "--source", "handbook")

    theirs.refresh_from_db()
    assert theirs.version == 2 and theirs.uploaded_by.username == "grace"
    assert handbook.documents.get(filename="mine.md").uploaded_by is None


@pytest.mark.django_db
def test_ingest_as_checks_the_user_and_the_source(notes):
    with pytest.raises(CommandError, match="No active user 'nobody'"):
        call_command("ingest", str(notes), "--as", "nobody")

    UserFactory(username="ada")
    with pytest.raises(CommandError, match="ada is not staff and may not create one"):
        call_command("ingest", str(notes), "--source", "new-source", "--as", "ada")
    assert not Source.objects.filter(name="new-source").exists()

    restricted = SourceFactory(name="team-notes", public=False)
    restricted.groups.add(GroupFactory(name="team"))
    with pytest.raises(CommandError, match="ada may not see source 'team-notes'"):
        call_command("ingest", str(notes), "--source", "team-notes", "--as", "ada")
    assert not Document.objects.exists()
