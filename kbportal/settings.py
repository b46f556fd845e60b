"""KB Portal settings: every value comes from a `KB_` environment variable.

Development defaults work with no environment at all (PostgreSQL and Redis on 127.0.0.1,
Elasticsearch on :9200, a filesystem object store under var/). Production sets KB_SECRET_KEY,
KB_DEBUG=0, KB_ALLOWED_HOSTS and KB_SECURE_SSL=1; `manage.py check --deploy` then reports no error.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


DEBUG = envbool("KB_DEBUG", True)
SECRET_KEY = envstr("KB_SECRET_KEY", "dev-insecure-" + "k" * 50 if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("KB_SECRET_KEY must be set when KB_DEBUG is off")
ALLOWED_HOSTS = envlist("KB_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("KB_CSRF_TRUSTED_ORIGINS", "")
VAR_DIR = Path(envstr("KB_VAR_DIR", str(BASE_DIR / "var")))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "django_ratelimit",
    "channels",
    "knowledge",
    "search",
    "ingestion",
    "dashboard",
]

MIDDLEWARE = [
    "kbportal.middleware.RequestIdMiddleware",
    "kbportal.middleware.MetricsMiddleware",
    "kbportal.middleware.ApiErrorMiddleware",
    "kbportal.middleware.SecurityHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kbportal.urls"
WSGI_APPLICATION = "kbportal.wsgi.application"
ASGI_APPLICATION = "kbportal.asgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        envstr("KB_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kbportal"),
        engine="django.db.backends.postgresql",
        # Connections come from the pool below; Django refuses persistent connections with a pool.
        conn_max_age=0,
        # The pool checks a connection before handing it out: one the server closed (a restart,
        # an idle timeout) is replaced, not given to a request.
        conn_health_checks=True,
    )
}
DATABASES["default"]["OPTIONS"] = {
    "connect_timeout": envint("KB_DB_CONNECT_TIMEOUT", 2),
    # Django's psycopg pool, one per process. Each request (each long-poll too) holds a connection
    # until it ends; a request that finds all KB_DB_POOL_MAX_SIZE in use waits at most
    # KB_DB_POOL_TIMEOUT seconds for one, and so does every request while PostgreSQL is down.
    "pool": {
        "min_size": envint("KB_DB_POOL_MIN_SIZE", 2),
        "max_size": envint("KB_DB_POOL_MAX_SIZE", 20),
        "timeout": envfloat("KB_DB_POOL_TIMEOUT", 2.0),
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("KB_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SOCKET_TIMEOUT = envfloat("KB_REDIS_TIMEOUT", 1.0)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": envstr("KB_CACHE_PREFIX", "kb"),
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            # A Redis that hangs is skipped for a few seconds after one timeout, not waited on by
            # every call (kbportal.redis_gate).
            "CONNECTION_POOL_CLASS": "kbportal.redis_gate.GatedConnectionPool",
        },
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.db"

#: The queues of ingestion jobs, in the order workers take them: `ocr` holds syncs of files that
#: may need OCR (images, PDFs), heavy work that should not hold up other sources' syncs.
KB_INGESTION_QUEUES = ("high", "default", "ocr", "low")
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": envint("KB_JOB_TIMEOUT", 3600)}
    for name in (*KB_INGESTION_QUEUES, "answers")
}
RQ_SHOW_ADMIN_LINK = True

# Redis pub/sub: each server process subscribes once per group and hands every event to its own
# consumers of that group, so a group_send is one PUBLISH however many sockets listen (the list-based
# core layer pushed one copy per socket and delivered them one at a time). At most once, no queue
# in Redis: a consumer that misses an event re-reads the database (ingestion/search consumers).
# Pub/sub channels ignore the Redis database number, so the prefix carries it.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": f"{envstr('KB_CACHE_PREFIX', 'kb')}:{urlsplit(REDIS_URL).path.strip('/') or '0'}:asgi:",
        },
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knowledge.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "kbportal.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "KB Portal API",
    "DESCRIPTION": "Knowledge bases, ingestion jobs and hybrid search.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Each API route also answers at its twin path (the trailing slash toggled); document it once.
    "PREPROCESSING_HOOKS": ["kbportal.slashes.drop_twins"],
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Security: strict by default when not in debug, as `check --deploy` expects.
SECURE_SSL = envbool("KB_SECURE_SSL", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_SSL
CSRF_COOKIE_SECURE = SECURE_SSL
SECURE_SSL_REDIRECT = SECURE_SSL
SECURE_HSTS_SECONDS = envint("KB_HSTS_SECONDS", 31536000 if SECURE_SSL else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_SSL
SECURE_HSTS_PRELOAD = SECURE_SSL
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE_SSL else None
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Search engine.
KB_ES_URL = envstr("KB_ES_URL", "http://127.0.0.1:9200")
KB_ES_API_KEY = envstr("KB_ES_API_KEY", "")
KB_ES_INDEX = envstr("KB_ES_INDEX", "kb_chunks")
KB_ES_TIMEOUT = envfloat("KB_ES_TIMEOUT", 2.0)
KB_ES_BULK_TIMEOUT = envfloat("KB_ES_BULK_TIMEOUT", 60.0)
# Shape of a new chunk index: primary shards, and replicas as Elasticsearch's auto_expand_replicas
# ("0-1": none on one node, one once a second node joins; "1" pins one copy).
KB_ES_SHARDS = envint("KB_ES_SHARDS", 1)
KB_ES_REPLICAS = envstr("KB_ES_REPLICAS", "0-1")
# kNN candidates per shard, as a multiple of k (recall against latency: manage.py bench_scale).
KB_KNN_CANDIDATES_FACTOR = envfloat("KB_KNN_CANDIDATES_FACTOR", 2.0)
# kNN re-ranks oversample * k int8 candidates by their float vectors (Elasticsearch 8.18+; 0: off).
KB_KNN_RESCORE_OVERSAMPLE = envfloat("KB_KNN_RESCORE_OVERSAMPLE", 3.0)

# Object storage: MinIO/S3 when an endpoint is set, else files under var/objects.
KB_S3_ENDPOINT = envstr("KB_S3_ENDPOINT", "")
KB_S3_ACCESS_KEY = envstr("KB_S3_ACCESS_KEY", "")
KB_S3_SECRET_KEY = envstr("KB_S3_SECRET_KEY", "")
KB_S3_BUCKET = envstr("KB_S3_BUCKET", "kbportal")
KB_S3_SECURE = envbool("KB_S3_SECURE", False)
KB_S3_REGION = envstr("KB_S3_REGION", "us-east-1")
KB_STORAGE_DIR = Path(envstr("KB_STORAGE_DIR", str(VAR_DIR / "objects")))

# Embeddings.
KB_EMBEDDER = envstr("KB_EMBEDDER", "minilm")
KB_EMBEDDERS = {
    "minilm": "knowledge.embedders.MiniLMEmbedder",
    "hashing": "knowledge.embedders.HashingEmbedder",
    "http": "knowledge.embedders.HttpEmbedder",
}
KB_EMBEDDERS.update(dict(item.split("=", 1) for item in envlist("KB_EXTRA_EMBEDDERS")))
KB_EMBED_BATCH = envint("KB_EMBED_BATCH", 64)
KB_EMBED_HTTP_URL = envstr("KB_EMBED_HTTP_URL", "")
KB_EMBED_HTTP_MODEL = envstr("KB_EMBED_HTTP_MODEL", "")
KB_EMBED_HTTP_API_KEY = envstr("KB_EMBED_HTTP_API_KEY", "")
KB_EMBED_HTTP_DIMS = envint("KB_EMBED_HTTP_DIMS", 384)

# Ingestion.
KB_MAX_UPLOAD_BYTES = envint("KB_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
# The whole request body (all files of one upload together), refused at the ASGI edge (kbportal.body_limit).
KB_MAX_REQUEST_BYTES = envint("KB_MAX_REQUEST_BYTES", 5 * KB_MAX_UPLOAD_BYTES)
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("KB_MAX_BODY_BYTES", 2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Documents (ingestion.extraction and the readers it calls): caps against hostile files, and OCR.
KB_MAX_PAGES = envint("KB_MAX_PAGES", 2000)  # pages of a PDF, slides of a deck, sheets x 1000 rows...
KB_MAX_IMAGE_PIXELS = envint("KB_MAX_IMAGE_PIXELS", 60_000_000)  # an image (or rendered page) larger is refused
KB_MAX_UNZIPPED_BYTES = envint("KB_MAX_UNZIPPED_BYTES", 200 * 1024 * 1024)  # an Office file, uncompressed
KB_MAX_ZIP_MEMBERS = envint("KB_MAX_ZIP_MEMBERS", 10_000)  # files inside an Office file
KB_MAX_TABLE_ROWS = envint("KB_MAX_TABLE_ROWS", 100_000)  # rows read from one sheet or CSV
KB_OCR_LANGS = os.environ.get("KB_OCR_LANGS", "eng")  # Tesseract languages, "+"-joined: eng, chi_sim, eng+chi_sim
KB_OCR_PAGE_TIMEOUT = envfloat("KB_OCR_PAGE_TIMEOUT", 60.0)  # seconds Tesseract may spend on one page
KB_OCR_DPI = envint("KB_OCR_DPI", 200)  # scanned PDF pages are rendered at this resolution for OCR
KB_OCR_MIN_TEXT_CHARS = envint("KB_OCR_MIN_TEXT_CHARS", 20)  # a PDF page with less text than this is OCR'd
KB_CHUNK_TOKENS = envint("KB_CHUNK_TOKENS", 300)
KB_CHUNK_OVERLAP = envfloat("KB_CHUNK_OVERLAP", 0.15)
KB_JOB_LEASE_SECONDS = envint("KB_JOB_LEASE_SECONDS", 60)
# 10 attempts with the default backoff (2 s doubling, capped at 300 s, full jitter) ride out an
# outage of about 7-13 minutes before a job is failed for good.
KB_JOB_MAX_ATTEMPTS = envint("KB_JOB_MAX_ATTEMPTS", 10)
KB_JOB_RETRY_BASE_SECONDS = envfloat("KB_JOB_RETRY_BASE_SECONDS", 2.0)
KB_JOB_RETRY_MAX_SECONDS = envfloat("KB_JOB_RETRY_MAX_SECONDS", 300.0)
KB_PROGRESS_INTERVAL = envfloat("KB_PROGRESS_INTERVAL", 0.25)
KB_SWEEP_INTERVAL = envint("KB_SWEEP_INTERVAL", 30)
# The orphan sweep (ingestion.orphans): when (a cron expression; not at scheduler start, since it
# reads the whole index), and how old an unreferenced stored file must be.
KB_ORPHAN_SWEEP_CRON = envstr("KB_ORPHAN_SWEEP_CRON", "17 * * * *")
KB_ORPHAN_GRACE_SECONDS = envint("KB_ORPHAN_GRACE_SECONDS", 3600)
# Crawler: per-hop connect/read timeout (a whole page gets 3x this), body cap, and CIDRs the SSRF
# guard lets through although they are private/loopback (e.g. "10.20.0.0/16" for an intranet wiki).
KB_CRAWLER_TIMEOUT = envfloat("KB_CRAWLER_TIMEOUT", 10.0)
KB_CRAWLER_MAX_BYTES = envint("KB_CRAWLER_MAX_BYTES", 5 * 1024 * 1024)
KB_CRAWLER_ALLOW_PRIVATE = envlist("KB_CRAWLER_ALLOW_PRIVATE", "")
KB_DEMO_CISI_DIR = envstr("KB_DEMO_CISI_DIR", str(BASE_DIR.parent / "shared" / "data" / "cisi"))

# Search API.
KB_SEARCH_CACHE_SECONDS = envint("KB_SEARCH_CACHE_SECONDS", 300)
# The "last good" copy of each result, served (degraded) while the search server is unavailable.
KB_SEARCH_STALE_SECONDS = envint("KB_SEARCH_STALE_SECONDS", 24 * 3600)
KB_EMBED_CACHE_SECONDS = envint("KB_EMBED_CACHE_SECONDS", 24 * 3600)
KB_ANON_RATE = envstr("KB_ANON_RATE", "20/s")
# django-ratelimit counts in the default cache (Redis); a count it cannot read lets the request through.
RATELIMIT_FAIL_OPEN = True
KB_DEFAULT_KEY_RATE = envstr("KB_DEFAULT_KEY_RATE", "50/s")
#: How long a process may reuse an API key it loaded when nothing said it changed (knowledge.keycache); 0 = never.
KB_KEY_CACHE_SECONDS = envfloat("KB_KEY_CACHE_SECONDS", 5.0)
KB_BREAKER_FAILURE_RATIO = envfloat("KB_BREAKER_FAILURE_RATIO", 0.5)
KB_BREAKER_MIN_CALLS = envint("KB_BREAKER_MIN_CALLS", 20)
KB_BREAKER_WINDOW_SECONDS = envint("KB_BREAKER_WINDOW_SECONDS", 60)
KB_BREAKER_OPEN_SECONDS = envfloat("KB_BREAKER_OPEN_SECONDS", 30.0)
KB_HEALTH_TIMEOUT = envfloat("KB_HEALTH_TIMEOUT", 1.5)

# Asking (search.asking.answering): generator, model endpoint, budgets, retention.
# KB_GENERATOR applies to every knowledge base unless KB_GENERATOR_BY_KB names one ("support=openai").
KB_GENERATOR = envstr("KB_GENERATOR", "extractive")
KB_GENERATOR_BY_KB = dict(item.split("=", 1) for item in envlist("KB_GENERATOR_BY_KB"))
KB_LLM_URL = envstr("KB_LLM_URL", "")
KB_LLM_MODEL = envstr("KB_LLM_MODEL", "")
KB_LLM_API_KEY = envstr("KB_LLM_API_KEY", "")
# Seconds the model may stay silent (connect, first token, between tokens) before the answer fails.
KB_LLM_TIMEOUT = envfloat("KB_LLM_TIMEOUT", 30.0)
# Seconds one generation may take in all, however steadily the model trickles tokens.
KB_LLM_MAX_SECONDS = envfloat("KB_LLM_MAX_SECONDS", 180.0)
KB_LLM_RETRIES = envint("KB_LLM_RETRIES", 3)
KB_LLM_RETRY_BASE_SECONDS = envfloat("KB_LLM_RETRY_BASE_SECONDS", 1.0)
KB_LLM_MAX_TOKENS = envint("KB_LLM_MAX_TOKENS", 512)
KB_ANSWER_TTL_HOURS = envfloat("KB_ANSWER_TTL_HOURS", 24)
KB_ANSWER_CONTEXT_TOKENS = envint("KB_ANSWER_CONTEXT_TOKENS", 2000)
KB_ANSWER_PASSAGES = envint("KB_ANSWER_PASSAGES", 6)
# Below both, no retrieved passage counts as relevant and the answer says nothing relevant was found
# (search.asking.relevance): the share of the question's terms a passage contains, and its cosine similarity.
KB_ASK_MIN_TERM_SHARE = envfloat("KB_ASK_MIN_TERM_SHARE", 0.5)
KB_ASK_MIN_SIMILARITY = envfloat("KB_ASK_MIN_SIMILARITY", 0.3)
# Answer tasks hold a short lease: cancellation is noticed at a renewal (a third of the lease).
KB_ANSWER_LEASE_SECONDS = envint("KB_ANSWER_LEASE_SECONDS", 6)
KB_ANSWER_MAX_ATTEMPTS = envint("KB_ANSWER_MAX_ATTEMPTS", 3)
# Streamed text is published to the answer's group at most this often (coalesced in between).
KB_ANSWER_STREAM_INTERVAL = envfloat("KB_ANSWER_STREAM_INTERVAL", 0.1)
KB_ANSWER_PURGE_INTERVAL = envint("KB_ANSWER_PURGE_INTERVAL", 3600)

# Operations: metrics (see kbportal.metrics), structured logs (kbportal.logging), login throttling.
# prometheus-client's multiprocess mode reads PROMETHEUS_MULTIPROC_DIR when it is first imported.
KB_METRICS_DIR = Path(
    envstr("KB_METRICS_DIR", os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(VAR_DIR / "metrics"))
).resolve()
KB_METRICS_DIR.mkdir(parents=True, exist_ok=True)  # every process needs it before its first metric
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(KB_METRICS_DIR)
# /metrics answers these networks (REMOTE_ADDR), or anyone with `Authorization: Bearer <token>`.
KB_METRICS_ALLOW = envlist("KB_METRICS_ALLOW", "127.0.0.1/32,::1/128")
KB_METRICS_TOKEN = envstr("KB_METRICS_TOKEN", "")
KB_LOG_JSON = envbool("KB_LOG_JSON", False)
# Failed sign-ins (dashboard and admin) allowed per client IP and per username in a window.
KB_LOGIN_RATE_IP = envstr("KB_LOGIN_RATE_IP", "50/15m")
KB_LOGIN_RATE_USER = envstr("KB_LOGIN_RATE_USER", "10/15m")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "kbportal.logging.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "kbportal.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if KB_LOG_JSON else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": envstr("KB_LOG_LEVEL", "INFO")},
    "loggers": {"elastic_transport": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# Called once when a worker process starts (load models before the first job).
KB_PRELOAD = envlist("KB_PRELOAD", "knowledge.embedders.preload_default")
KB_SERVE_STATIC = envbool("KB_SERVE_STATIC", True)
# Torch threads per process for the local model (0: torch's default, every core).
KB_TORCH_THREADS = envint("KB_TORCH_THREADS", 0)
# Scheduling priority offset of worker processes (0 = same as the web processes).
KB_WORKER_NICE = envint("KB_WORKER_NICE", 10)
