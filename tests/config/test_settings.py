"""Settings from a plain shell: the secret key `make run` writes is found by every process, and a
missing key or a malformed value stops start-up with one line naming what to set, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.env import env_secret

ROOT = Path(__file__).resolve().parents[2]
NO_KEY = "Freshet needs a secret key: run `make run` once"


def manage(*args: str, var_dir: Path, **variables: str) -> subprocess.CompletedProcess:
    """`manage.py *args` as an operator runs it from a shell: the project's settings, a fresh
    environment holding none of the test run's variables (no DJANGO_SECRET_KEY) but `variables`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(var_dir)),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "FRESHET_VAR_DIR": str(var_dir),
        "DATABASE_URL": f"sqlite:///{var_dir / 'freshet.sqlite3'}",
        "REDIS_URL": settings.REDIS_URL,
        "FRESHET_KEY_PREFIX": f"{settings.REDIS_KEY_PREFIX}shell:",
        **variables,
    }
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


def test_readme_commands_find_the_key_make_run_wrote(tmp_path):
    (tmp_path / "secret_key").write_text("a-key-make-run-wrote-for-this-machine\n")
    for command in (["migrate", "--noinput", "-v0"], ["ensure_admin"], ["check"]):
        done = manage(*command, var_dir=tmp_path)
        assert done.returncode == 0, done.stderr
    token = manage("drf_create_token", "admin", var_dir=tmp_path)
    assert token.returncode == 0 and "Generated token" in token.stdout, token.stderr
    search = manage("search", "how do glaciers retreat", "--k", "5", var_dir=tmp_path)
    assert search.returncode == 0 and "No results." in search.stdout, search.stderr


@pytest.mark.parametrize("command", [["check"], ["drf_create_token", "admin"], ["search", "x"]])
def test_with_no_key_anywhere_a_command_says_how_to_get_one(tmp_path, command):
    done = manage(*command, var_dir=tmp_path)
    assert done.returncode == 2
    assert NO_KEY in done.stderr and "DJANGO_SECRET_KEY" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("EVENT_RETRY_MAX", "abc"),
    ("PIPELINE_TIME_LIMIT_EMBED", "300,200"),
    ("PIPELINE_SWEEP_SECONDS", "1"),
])
def test_a_malformed_value_stops_a_command_naming_the_variable(tmp_path, variable, value):
    done = manage("check", var_dir=tmp_path, DJANGO_SECRET_KEY="k", **{variable: value})
    assert done.returncode == 2
    assert variable in done.stderr and "Traceback" not in done.stderr


def test_the_key_comes_from_the_variable_then_the_file(tmp_path, monkeypatch):
    key_file = tmp_path / "secret_key"
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    assert env_secret("DJANGO_SECRET_KEY", file=key_file) == ""
    key_file.write_text("from-the-file\n")
    assert env_secret("DJANGO_SECRET_KEY", file=key_file) == "from-the-file"
    monkeypatch.setenv("DJANGO_SECRET_KEY", "")  # set but empty: as if unset
    assert env_secret("DJANGO_SECRET_KEY", file=key_file) == "from-the-file"
    monkeypatch.setenv("DJANGO_SECRET_KEY", "from-the-variable")
    assert env_secret("DJANGO_SECRET_KEY", file=key_file) == "from-the-variable"


def test_every_queue_has_time_limits_below_the_batch_claim():
    assert set(settings.PIPELINE_TIME_LIMITS) == set(settings.FRESHET_QUEUES)
    assert settings.PIPELINE_TIME_LIMITS["embed"] == (240, 270)
    assert settings.PIPELINE_TIME_LIMITS["sinks"] == (60, 90)
    for soft, hard in settings.PIPELINE_TIME_LIMITS.values():
        assert 0 < soft < hard < settings.PIPELINE_BATCH_CLAIM_SECONDS
        assert hard < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert settings.CELERY_BEAT_SCHEDULE["pipeline-batches-recover"]["schedule"] == settings.PIPELINE_SWEEP_SECONDS


@pytest.mark.parametrize(("value", "named"), [
    ("fast", "PIPELINE_TIME_LIMIT_INDEX"),
    ("100", "PIPELINE_TIME_LIMIT_INDEX"),
    ("0,50", "PIPELINE_TIME_LIMIT_INDEX"),
    ("200,100", "PIPELINE_TIME_LIMIT_INDEX"),
    ("250,400", "PIPELINE_BATCH_CLAIM_SECONDS"),
])
def test_a_malformed_time_limit_stops_start_up_naming_the_variable(monkeypatch, value, named):
    from config import settings as project_settings

    monkeypatch.setenv("PIPELINE_TIME_LIMIT_INDEX", value)
    with pytest.raises(ImproperlyConfigured, match=named):
        project_settings._time_limits("index")


def test_a_time_limit_is_read_and_kept_below_the_visibility_timeout(monkeypatch):
    from config import settings as project_settings

    monkeypatch.setenv("PIPELINE_TIME_LIMIT_INDEX", "100, 200.5")
    assert project_settings._time_limits("index") == (100, 200.5)
    monkeypatch.setattr(project_settings, "PIPELINE_BATCH_CLAIM_SECONDS", 7200)
    monkeypatch.setenv("PIPELINE_TIME_LIMIT_INDEX", "3000,4000")
    with pytest.raises(ImproperlyConfigured, match="CELERY_VISIBILITY_TIMEOUT"):
        project_settings._time_limits("index")


def test_every_scheduled_task_is_a_registered_task():
    from config.celery_app import app

    app.loader.import_default_modules()  # the apps' tasks modules, as a worker loads them
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, f"beat entry {name} names no task"
