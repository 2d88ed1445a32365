import json

import pytest
from django.core.management import CommandError, call_command

from ingestion.models import Document, Source

pytestmark = pytest.mark.worker


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
