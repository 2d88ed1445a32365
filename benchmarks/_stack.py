"""Run a Freshet stack for a benchmark: settings from the environment (the `make run` defaults),
or an isolated one in a scratch folder with its own Celery worker."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def django_setup(*, isolated: bool) -> dict[str, str]:
    """Configure Django in this process; with `isolated`, in a scratch var/ folder."""
    env: dict[str, str] = {}
    if isolated:
        env = {
            "FRESHET_VAR_DIR": tempfile.mkdtemp(prefix="freshet-bench-"),
            "FRESHET_KEY_PREFIX": f"freshet-bench-{os.getpid()}:",
            # The exported encoder graphs are shared (keyed by the weights' hash, made under a
            # lock): a scratch folder would export them again in the middle of what is measured.
            "EMBEDDING_EXPORT_DIR": os.environ.get("EMBEDDING_EXPORT_DIR") or str(ROOT / "var" / "encoders"),
        }
        os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.update(production_like())
    import django

    django.setup()
    if isolated:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return env


def production_like() -> dict[str, str]:
    """DEBUG off, as `make run` runs (DEBUG records every SQL query: slower, and not what users
    get), with make run's secret key or a throwaway one; set in this process and returned for
    the processes it starts."""
    env = {"DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "0")}
    if not os.environ.get("DJANGO_SECRET_KEY"):
        key_file = ROOT / "var" / "secret_key"
        env["DJANGO_SECRET_KEY"] = key_file.read_text().strip() if key_file.exists() else secrets.token_urlsafe(50)
    os.environ.update(env)
    return env


@contextlib.contextmanager
def worker(env: dict[str, str], *, concurrency: int = 2, log: Path | None = None):
    """A `celery worker` on every queue, like `make run` starts, for the length of the block."""
    from django.conf import settings

    from config.celery_app import app

    log_file = open(log or os.devnull, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", ",".join(settings.FRESHET_QUEUES),
         "-c", str(concurrency), "-l", "warning", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not app.control.ping(timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("The benchmark's Celery worker did not start.")
        time.sleep(3)  # let the pool's processes load the model (worker_process_init)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log_file.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
