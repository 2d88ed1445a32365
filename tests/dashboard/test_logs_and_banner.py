"""LOG_FORMAT=json: one JSON object a line, with the event id and document id of the delivery
being handled; `make run`'s sign-in box (ensure_admin)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from ingestion.management.commands.ensure_admin import password_file
from tests.conftest import ROOT

SCRIPT = """
import logging, django
django.setup()
from events.envelope import cloudevent_new
from events.handling import event_handler

log = logging.getLogger("freshet.test")

@event_handler
def stage(data):
    log.info("working on it")
    raise ValueError("cannot parse this")

log.info("outside any event")
event = cloudevent_new(type="freshet.document.changed", subject="documents/7", data={"document_id": 7, "version": 1})
stage(event)
print(event.get_id())
"""


def test_json_logs_carry_the_event_and_document_ids(tmp_path):
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "FRESHET_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]  # each line is JSON
    ours = {line["message"]: line for line in lines if line["logger"] in ("freshet.test", "events.handling")}
    assert "event_id" not in ours["outside any event"]
    working = ours["working on it"]
    event_id = result.stdout.strip()
    assert (working["event_id"], working["document_id"], working["level"]) == (event_id, 7, "INFO")
    failed = next(line for message, line in ours.items() if message.startswith("Handler stage failed"))
    assert (failed["event_id"], failed["document_id"], failed["level"]) == (event_id, 7, "ERROR")
    assert "ValueError: cannot parse this" in failed["exc_info"]
    assert {"time", "logger", "process"} <= set(working)


def test_a_malformed_log_format_stops_start_up(tmp_path):
    env = {**os.environ, "LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "FRESHET_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "LOG_FORMAT='xml' must be plain or json" in result.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (the stdlib's name)
        self.send_response(200 if self.path == "/api/health/" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_generated_password_is_shown_in_a_box_once_the_server_is_up(db, health_server, monkeypatch):
    monkeypatch.delenv("FRESHET_ADMIN_PASSWORD", raising=False)
    made = StringIO()
    call_command("ensure_admin", stdout=made)
    password = password_file().read_text().strip()
    assert password not in made.getvalue() and "shown in a box" in made.getvalue()
    assert oct(password_file().stat().st_mode & 0o777) == "0o600"
    assert User.objects.get(username="admin").check_password(password)

    box = StringIO()
    call_command("ensure_admin", "--banner", health_server, "--exit", "--timeout", "10", stdout=box)
    lines = box.getvalue().strip().splitlines()
    assert lines[0].startswith("╔") and lines[-1].startswith("╚")
    assert len({len(line) for line in lines}) == 1  # a closed box
    text = box.getvalue()
    assert f"password: {password}" in text and f"{health_server}/admin/" in text and "/dashboard/" in text

    # Once the password is changed, the file goes and the box no longer shows it.
    admin = User.objects.get(username="admin")
    admin.set_password("changed in the admin")
    admin.save()
    again = StringIO()
    call_command("ensure_admin", "--banner", health_server, "--exit", "--timeout", "10", stdout=again)
    assert password not in again.getvalue() and "the one you set" in again.getvalue()
    assert not password_file().exists()
    existing = StringIO()
    call_command("ensure_admin", stdout=existing)
    assert "exists" in existing.getvalue()
