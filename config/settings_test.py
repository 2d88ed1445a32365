"""Test settings: the real PostgreSQL and Redis of the machine, a scratch var/ folder."""

import os
import tempfile
import uuid

# Each test run gets its own Redis key prefix, test database and var/ folder, so runs (and the
# worker process each one starts, which inherits this environment) never see each other's work.
RUN_ID = os.environ.setdefault("FRESHET_TEST_RUN_ID", uuid.uuid4().hex[:10])
os.environ.setdefault("FRESHET_KEY_PREFIX", f"freshet-test-{RUN_ID}:")

os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/freshet")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("FRESHET_VAR_DIR", tempfile.mkdtemp(prefix="freshet-test-"))
# Exported encoder graphs are keyed by the weights' hash (ingestion/encoders.py), so runs can share
# them: each run would otherwise export and quantise the model again (~20 s).
os.environ.setdefault("EMBEDDING_EXPORT_DIR", os.path.join(tempfile.gettempdir(), "freshet-test-encoders"))

from config.settings import *  # noqa: E402,F403

DATABASES["default"]["TEST"] = {"NAME": f"test_freshet_{RUN_ID}"}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_ROOT = VAR_DIR / "static"  # noqa: F405
STATIC_ROOT.mkdir(exist_ok=True)
