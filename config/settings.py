"""Freshet settings, read from the environment in one place.

Every value has a working default for the embedded single-machine setup, except secrets when
DEBUG is off. See platform/env.example for the full list. Each section is written once; a
malformed value stops start-up with a SettingsError naming the variable. The sections that
stand alone live in modules of their own, imported here: settings_sources (uploads, outbound
requests, connectors, web fetching), settings_api (REST API), settings_chat (the language
model, chat, feedback), settings_events (event intake and sinks).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from config.env import SettingsError, env_bool, env_float, env_float_pair, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FRESHET_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core -----------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/
DEBUG = env_bool("DJANGO_DEBUG", False)
# `make run` writes the key into VAR_DIR/secret_key once, so every process started from a plain
# shell (manage.py, daphne, celery) finds the same key without DJANGO_SECRET_KEY in its environment.
_SECRET_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = env_secret("DJANGO_SECRET_KEY", file=_SECRET_KEY_FILE)
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "insecure-dev-key-only-for-debug"
if not SECRET_KEY:
    _shown = _SECRET_KEY_FILE.relative_to(BASE_DIR) if _SECRET_KEY_FILE.is_relative_to(BASE_DIR) else _SECRET_KEY_FILE
    raise SettingsError(
        f"Freshet needs a secret key: run `make run` once (it writes {_shown}), or set DJANGO_SECRET_KEY."
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "events",
    "ingestion",
    "chat",
    "feedback",
    "dashboard",
]

MIDDLEWARE = [
    "dashboard.metrics.middleware.RequestTimingMiddleware",  # request latency for /metrics
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"
# Threads a web process keeps for requests' synchronous code (config/asgi_handler.py), each with
# its database connection; a request that finds them all busy gets a short-lived thread of its own.
WEB_THREADS = env_int("WEB_THREADS", 32, minimum=1)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = Path(env_str("FRESHET_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# https://docs.djangoproject.com/en/5.2/topics/logging/  https://nhairs.github.io/python-json-logger/
# LOG_FORMAT=json: one JSON object a line, with the event id and document id of the delivery being
# handled where there is one (config/logs.py); plain: for people.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise SettingsError(f"LOG_FORMAT={LOG_FORMAT!r} must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.logs.LogContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Database -------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#databases
# SQLite file by default; DATABASE_URL (postgres://...) when one machine is not enough.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'freshet.sqlite3'}")
_SQLITE = DATABASE_URL.startswith("sqlite:")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        # Opening an SQLite connection costs more than most of the queries a pipeline task makes:
        # keep it (a file, no server to hold connections open on). A server database: 0, unless
        # its connection limit allows each worker process and web thread one of its own.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600 if _SQLITE else 0, minimum=0),
    )
}
if _SQLITE:
    # Several processes (web, worker) share the file: wait for locks instead of failing. WAL
    # lets readers go on while one process writes, and a commit appends to the log without an
    # fsync of the database (a power cut may lose the last commits, never corrupt the file).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30, "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Celery, Channels ----------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Every Redis key Freshet writes (queues, vector hand-offs) starts with this prefix, so several
# deployments or test runs can share one Redis.
REDIS_KEY_PREFIX = env_str("FRESHET_KEY_PREFIX", "freshet:")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Messages each pool process holds ahead (acknowledged late, so a crash redelivers them): 4 lets
# the embed stage gather many documents into one batch and keeps the processes from idling between
# short tasks (SciFact, 600 documents: 78 s with 1, 63 s with 4; 8 and 16 no better).
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4, minimum=1)
CELERY_TASK_DEFAULT_QUEUE = "sync"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A task not acknowledged within this time is redelivered (covers a worker killed mid-task).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60),
    "global_keyprefix": REDIS_KEY_PREFIX,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes every database connection before and after each task unless this
# is set; config/celery_app.py runs Django's close_old_connections there instead (CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = 1 << 62
# kombu's Redis transport with a fix that keeps a worker alive when it loses Redis (config/celery_app.py).
CELERY_BROKER_TRANSPORT = "config.celery_app:RedisTransport" if CELERY_BROKER_URL.startswith("redis://") else None
FRESHET_QUEUES = ("parse", "chunk", "embed", "index", "feedback", "sync", "sinks")

# https://channels.readthedocs.io/en/stable/topics/channel_layers.html
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 reads with a 5 s socket timeout by default, the same as the layer's blocking
        # BZPOPMIN, so an idle socket's consumer dies with "Timeout reading from" every few
        # seconds (django/channels_redis#422): give reads more time than the blocking pop.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "prefix": f"{REDIS_KEY_PREFIX}asgi"},
    }
}

# --- Pipeline (events/, ingestion/pipeline/) ------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/tasks.html#retrying
# A transient failure of one event delivery is retried this many times, with exponential backoff
# and jitter capped at EVENT_RETRY_BACKOFF_MAX seconds; then the document fails with its reason.
EVENT_RETRY_MAX = env_int("EVENT_RETRY_MAX", 8, minimum=0)
EVENT_RETRY_BACKOFF_MAX = env_float("EVENT_RETRY_BACKOFF_MAX", 300.0)
if not EVENT_RETRY_BACKOFF_MAX > 0:
    raise SettingsError(f"EVENT_RETRY_BACKOFF_MAX={EVENT_RETRY_BACKOFF_MAX} must be above 0 (seconds).")
# How long an embed or index batch claims its documents (a dead batch's are taken up after it).
PIPELINE_BATCH_CLAIM_SECONDS = env_int("PIPELINE_BATCH_CLAIM_SECONDS", 300, minimum=30)
# https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits
_TIME_LIMIT_DEFAULTS = {
    "parse": (120, 150), "chunk": (120, 150), "embed": (240, 270), "index": (240, 270),
    "feedback": (120, 150), "sync": (240, 270), "sinks": (60, 90),
}


def _time_limits(queue: str) -> tuple[float, float]:
    """The (soft, hard) time limits in seconds of the tasks on `queue`: PIPELINE_TIME_LIMIT_<QUEUE>
    as "soft,hard", or the default. The soft limit lets a task fail its document with a reason;
    the hard one kills the process, before the batch claims it may hold expire."""
    name = f"PIPELINE_TIME_LIMIT_{queue.upper()}"
    soft, hard = env_float_pair(name, _TIME_LIMIT_DEFAULTS[queue])
    if not 0 < soft < hard:
        raise SettingsError(f"{name}={soft:g},{hard:g}: the soft limit must be above 0 and below the hard one.")
    for bound, limit, otherwise in (
        ("PIPELINE_BATCH_CLAIM_SECONDS", PIPELINE_BATCH_CLAIM_SECONDS, "a batch's claims expire while it runs"),
        ("CELERY_VISIBILITY_TIMEOUT", CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"],
         "a running task is delivered a second time"),
    ):
        if not hard < limit:
            raise SettingsError(f"{name}: the hard limit {hard:g} s must be below {bound} ({limit} s), or {otherwise}.")
    return soft, hard


PIPELINE_TIME_LIMITS = {queue: _time_limits(queue) for queue in FRESHET_QUEUES}
# The sweep (every PIPELINE_SWEEP_SECONDS) publishes again what made no progress for STUCK seconds.
PIPELINE_STUCK_SECONDS = env_int("PIPELINE_STUCK_SECONDS", 600, minimum=30)
PIPELINE_SWEEP_SECONDS = env_int("PIPELINE_SWEEP_SECONDS", 60, minimum=5)

# --- Search index ---------------------------------------------------------------------------
# LanceDB files under var/ by default; ELASTICSEARCH_URL switches to an Elasticsearch 8 cluster.
# https://lancedb.github.io/lancedb/ and https://www.elastic.co/guide/en/elasticsearch/client/python-api/8.x/
SEARCH_INDEX_DIR = Path(env_str("SEARCH_INDEX_DIR", str(VAR_DIR / "lancedb")))
# LanceDB: searches look for other processes' writes at most this often (each look reads the
# table's manifest: a few ms a search); 0 looks before every search. Writes always see the latest.
SEARCH_INDEX_SEARCH_LAG_SECONDS = env_float("SEARCH_INDEX_SEARCH_LAG_SECONDS", 0.1)
SEARCH_INDEX_REFRESH_SECONDS = env_float("SEARCH_INDEX_REFRESH_SECONDS", 1.0)  # writes -> full-text stats, coalesced
SEARCH_INDEX_OPTIMIZE_SECONDS = env_int("SEARCH_INDEX_OPTIMIZE_SECONDS", 300, minimum=10)  # compaction, scheduled
ELASTICSEARCH_URL = env_str("ELASTICSEARCH_URL", "")
ELASTICSEARCH_INDEX = env_str("ELASTICSEARCH_INDEX", "freshet-chunks")
ELASTICSEARCH_TIMEOUT = env_float("ELASTICSEARCH_TIMEOUT", 30.0)

# --- Retrieval (chat/retrieval/) --------------------------------------------------------------
# How hybrid search fuses its BM25 and kNN candidate lists; the defaults were chosen on SciFact's
# train split (README, "Search and evaluation"). SEARCH_FUSION: rrf (reciprocal rank) or convex
# (min-max normalised scores, weighted).
SEARCH_FUSION = env_str("SEARCH_FUSION", "convex")
if SEARCH_FUSION not in ("rrf", "convex"):
    raise SettingsError(f"SEARCH_FUSION={SEARCH_FUSION!r} must be rrf or convex.")
SEARCH_RRF_K = env_int("SEARCH_RRF_K", 60, minimum=0)  # with SEARCH_FUSION=rrf
SEARCH_BM25_WEIGHT = env_float("SEARCH_BM25_WEIGHT", 0.55)
SEARCH_KNN_WEIGHT = env_float("SEARCH_KNN_WEIGHT", 0.45)
if SEARCH_BM25_WEIGHT < 0 or SEARCH_KNN_WEIGHT < 0:
    raise SettingsError("SEARCH_BM25_WEIGHT and SEARCH_KNN_WEIGHT must not be negative.")
SEARCH_CANDIDATES = env_int("SEARCH_CANDIDATES", 100, minimum=1)  # per list, before fusion
# The feedback boost: a chunk's fused score x 2 ** (weight x its feedback score in (-1, 1)
# + context weight x what voters who asked something close said, feedback/profiles.py); both 0
# turn feedback off. THRESHOLD is the cosine between two questions below which a vote on one says
# nothing about the other. Chosen on SciFact's train split (`benchmarks/feedback_replay.py
# --tune`, votes from half the queries): 0.5 / 3 / 0.6 / 1 gave +0.130 nDCG@10 on the voted half
# and +0.039 on the other; the score alone at its best (weight 1.5) +0.115 and +0.010.
SEARCH_FEEDBACK_WEIGHT = env_float("SEARCH_FEEDBACK_WEIGHT", 0.5)
SEARCH_FEEDBACK_CONTEXT_WEIGHT = env_float("SEARCH_FEEDBACK_CONTEXT_WEIGHT", 3.0)
SEARCH_FEEDBACK_CONTEXT_THRESHOLD = env_float("SEARCH_FEEDBACK_CONTEXT_THRESHOLD", 0.6)
SEARCH_FEEDBACK_CONTEXT_PRIOR = env_float("SEARCH_FEEDBACK_CONTEXT_PRIOR", 1.0)  # as FEEDBACK_PRIOR, per question
if SEARCH_FEEDBACK_WEIGHT < 0 or SEARCH_FEEDBACK_CONTEXT_WEIGHT < 0:
    raise SettingsError("SEARCH_FEEDBACK_WEIGHT and SEARCH_FEEDBACK_CONTEXT_WEIGHT must not be negative.")
if SEARCH_FEEDBACK_CONTEXT_PRIOR <= 0:
    raise SettingsError("SEARCH_FEEDBACK_CONTEXT_PRIOR must be above 0.")
if not -1 <= SEARCH_FEEDBACK_CONTEXT_THRESHOLD < 1:
    raise SettingsError("SEARCH_FEEDBACK_CONTEXT_THRESHOLD is a cosine: at least -1, below 1.")
SEARCH_QUERY_CACHE_SIZE = env_int("SEARCH_QUERY_CACHE_SIZE", 1024, minimum=0)  # query embeddings kept per process
SEARCH_MAX_QUERY_CHARS = env_int("SEARCH_MAX_QUERY_CHARS", 1000, minimum=1)
SEARCH_MAX_K = env_int("SEARCH_MAX_K", 100, minimum=1)

from config.settings_models import *  # noqa: E402,F403 (EMBEDDING_*, FRESHET_WARM_UP)

# Exported encoder graphs, cached by weights hash (ingestion/encoders.py).
EMBEDDING_EXPORT_DIR = Path(env_str("EMBEDDING_EXPORT_DIR", str(VAR_DIR / "encoders")))
# LanceDB: kNN by one matrix product over the table's vectors held in memory, for tables up to
# this many rows (ingestion/search_index/lancedb_vectors.py); 0: always LanceDB's own search.
SEARCH_INDEX_MEMORY_KNN_ROWS = env_int("SEARCH_INDEX_MEMORY_KNN_ROWS", 100_000, minimum=0)
# And BM25 from an inverted index of the same snapshot (lancedb_bm25.py; ~2 KB a row); off: LanceDB's.
SEARCH_INDEX_MEMORY_BM25 = env_bool("SEARCH_INDEX_MEMORY_BM25", True)

from config.settings_sources import *  # noqa: E402,F403 (uploads, outbound, connectors, web)

# --- Reliability: parser limits, redeliveries (ingestion/parse_limits.py, events/tasks.py) -----
# https://docs.python.org/3/library/resource.html#resource.RLIMIT_AS
# One document's parse: a file past any of these fails alone, with the reason; the worker goes on.
PARSE_TIME_LIMIT_SECONDS = env_float("PARSE_TIME_LIMIT_SECONDS", 60.0)
if not 0 <= PARSE_TIME_LIMIT_SECONDS < PIPELINE_TIME_LIMITS["parse"][0]:
    raise SettingsError(f"PARSE_TIME_LIMIT_SECONDS={PARSE_TIME_LIMIT_SECONDS:g} must be from 0 (none) up to below the "
                        f"parse queue's soft time limit ({PIPELINE_TIME_LIMITS['parse'][0]:g} s), or the task's "
                        "limit cuts the parse first, without the reason.")
PARSE_MEMORY_LIMIT_MB = env_int("PARSE_MEMORY_LIMIT_MB", 1024, minimum=0)  # address-space growth; 0: none
PARSE_MAX_TEXT_CHARACTERS = env_int("PARSE_MAX_TEXT_CHARACTERS", 10_000_000, minimum=1)
PARSE_MAX_PDF_PAGES = env_int("PARSE_MAX_PDF_PAGES", 2000, minimum=1)
# Archives (a DOCX is a zip), checked before anything opens them.
PARSE_MAX_UNCOMPRESSED_BYTES = env_int("PARSE_MAX_UNCOMPRESSED_BYTES", 200 * 1024 * 1024, minimum=1)
PARSE_MAX_COMPRESSION_RATIO = env_int("PARSE_MAX_COMPRESSION_RATIO", 100, minimum=1)
PARSE_MAX_ARCHIVE_MEMBERS = env_int("PARSE_MAX_ARCHIVE_MEMBERS", 5000, minimum=1)
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost
# A delivery whose worker process died under it this many times (a file that crashes the parser
# or the model) fails its document with the reason instead of being redelivered for ever.
EVENT_REDELIVERY_MAX = env_int("EVENT_REDELIVERY_MAX", 3, minimum=1)


from config.settings_api import *  # noqa: E402,F403 (REST_FRAMEWORK, SPECTACULAR_SETTINGS)
from config.settings_api import _throttle_rate  # noqa: E402,F401 (the rate check, tested through here)
from config.settings_chat import *  # noqa: E402,F403 (LLM_*, CHAT_*, FEEDBACK_*)
from config.settings_chat import FEEDBACK_REFRESH_SECONDS  # noqa: E402 (the beat schedule below)

# --- Operations: /dashboard/, /metrics (dashboard/) --------------------------------------------
# https://prometheus.github.io/client_python/multiprocess/
# Every process (web, workers) writes its metrics under PROMETHEUS_MULTIPROC_DIR and /metrics adds
# them up; prometheus-client reads the variable when it is imported, so it is set here for every
# process started with these settings. `make run` empties the folder at start.
PROMETHEUS_MULTIPROC_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus")))
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
# /metrics answers loopback callers (not proxied ones), and others with `Authorization: Bearer
# <METRICS_TOKEN>`; empty: loopback only.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# The dashboard's live feed: events reach open dashboards in one message per process and interval
# (0 turns the feed off); a fresh snapshot follows at most every DASHBOARD_SNAPSHOT_SECONDS.
DASHBOARD_LIVE_SECONDS = env_float("DASHBOARD_LIVE_SECONDS", 0.25)
DASHBOARD_SNAPSHOT_SECONDS = env_float("DASHBOARD_SNAPSHOT_SECONDS", 1.0)
if DASHBOARD_LIVE_SECONDS < 0 or DASHBOARD_SNAPSHOT_SECONDS < 0:
    raise SettingsError("DASHBOARD_LIVE_SECONDS and DASHBOARD_SNAPSHOT_SECONDS must not be negative.")
# Celery configures the root logger of a worker unless told not to; with JSON logs the worker's
# lines go through LOGGING above like every other process's.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"

# --- Scheduler (celery beat) ----------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html
# The per-source sync schedules are PeriodicTasks in the database (django-celery-beat, edited in
# the admin); beat runs with its DatabaseScheduler, which also takes in the entries below.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "search-index-optimize": {
        "task": "ingestion.tasks.search_index_optimize",
        "schedule": SEARCH_INDEX_OPTIMIZE_SECONDS,
        "options": {"queue": "sync"},
    },
    # The sweep: batches of the embed and index stages whose process died are taken up again, and
    # documents stuck pending or processing for PIPELINE_STUCK_SECONDS are published again.
    "pipeline-batches-recover": {
        "task": "ingestion.tasks.pipeline_sweep",
        "schedule": PIPELINE_SWEEP_SECONDS,
        "options": {"queue": "sync"},
    },
    "feedback-refresh": {
        "task": "feedback.tasks.feedback_refresh",
        "schedule": FEEDBACK_REFRESH_SECONDS,
        "options": {"queue": "feedback"},
    },
}

from config.settings_events import *  # noqa: E402,F403 (EVENTS_*, SINK_*)
from config.settings_events import SINK_COUNTDOWN_MAX_SECONDS, SINK_SWEEP_SECONDS  # noqa: E402

if not 0 <= SINK_COUNTDOWN_MAX_SECONDS < CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]:
    raise SettingsError("SINK_COUNTDOWN_MAX_SECONDS must be below CELERY_VISIBILITY_TIMEOUT (a longer countdown "
                        "is delivered twice).")
CELERY_IMPORTS = ("events.intake.tasks", "events.sinks.tasks")
CELERY_BEAT_SCHEDULE["events-received-sweep"] = {
    "task": "events.intake.tasks.received_events_sweep",
    "schedule": 60,
    "options": {"queue": "sync"},
}
CELERY_BEAT_SCHEDULE["sink-deliveries-due"] = {
    "task": "events.sinks.tasks.sink_deliveries_due",
    "schedule": SINK_SWEEP_SECONDS,
    "options": {"queue": "sinks"},
}
