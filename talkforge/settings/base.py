"""Settings shared by every environment. Everything a deployment changes comes from the environment.

The defaults are the embedded ones that ``make run`` uses: SQLite under ./var, Redis on localhost,
media under ./var/media. Nothing here has side effects: no folders are made, no keys generated.
"""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .env import (
    database_from_environment,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
)
from .rq_queues import KnownQueues

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("TALKFORGE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is not set: export a long random string (make run sets one).")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Reverse proxies in front of this process that each append the address they saw to X-Forwarded-For.
# 0: the client is REMOTE_ADDR and X-Forwarded-For is ignored (anyone can write it); N: the Nth address
# from the right, the one the outermost trusted proxy saw (core/proxies.py).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_rq",
    "axes",
    "core",
    "accounts",
    "gpu_nodes",
    "jobs",
    "avatars",
    "videos",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into accounts/lockout.py's page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "talkforge.urls"
ASGI_APPLICATION = "talkforge.asgi.application"
WSGI_APPLICATION = "talkforge.wsgi.application"

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

# DATABASE_URL, and for PostgreSQL a connection pool per process (DATABASE_POOL*, see env.py).
DATABASES = {"default": database_from_environment(f"sqlite:///{VAR_DIR / 'talkforge.sqlite3'}")}
# Threads per web process that run HTTP views (talkforge/asgi.py RequestThreads: one keeps each process's
# requests first come first served; uploads get threads of their own); each holds at most one of the pool's
# connections at a time, so the pool must have at least as many.
WEB_THREADS = env_int("WEB_THREADS", 1, minimum=1)
_pool = DATABASES["default"].get("OPTIONS", {}).get("pool")
if _pool and _pool["max_size"] < WEB_THREADS:
    raise ImproperlyConfigured(
        f"WEB_THREADS={WEB_THREADS} is above DATABASE_POOL_MAX_SIZE={_pool['max_size']}: a view would wait "
        "for a database connection; raise DATABASE_POOL_MAX_SIZE or lower WEB_THREADS."
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
# django-axes first: it refuses a locked-out sign-in before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Where people's media live (core/media.py): "local" is MEDIA_ROOT on this machine's disk, which every
# worker must then share; "s3" is a bucket of S3 or any S3-compatible store (MinIO, R2), which workers on
# other machines reach too. Browsers get media from it through short-lived signed links, handed out only
# after the owner check (README "Media storage").
MEDIA_STORAGE = env_str("MEDIA_STORAGE", "local").strip().lower()
MEDIA_URL_EXPIRY = env_int("MEDIA_URL_EXPIRY", 300, minimum=10)  # seconds a signed media link works
if MEDIA_STORAGE == "s3":
    AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME", "").strip()
    if not AWS_STORAGE_BUCKET_NAME:
        raise ImproperlyConfigured(
            "MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME: the bucket that holds the media (create it "
            "first), plus AWS_S3_ENDPOINT_URL for a store other than AWS S3 (MinIO, R2) and the keys."
        )
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL", "").strip() or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "").strip() or None,
            # Blank keys: boto3 finds credentials itself (an instance role, ~/.aws).
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE", "").strip() or None,  # "path" for MinIO
            "signature_version": "s3v4",
            "querystring_auth": True,  # every URL is signed; the bucket stays private
            "querystring_expire": MEDIA_URL_EXPIRY,
            "default_acl": None,
            "file_overwrite": True,  # the platform chooses unique names itself
        },
    }
elif MEDIA_STORAGE != "local":
    raise ImproperlyConfigured(f"MEDIA_STORAGE={MEDIA_STORAGE!r} is not a media store: use local or s3.")
# With a remote store, workers keep a local copy of each voice's reference recording here (with the XTTS
# speaker latents computed from it), so a chat turn does not download it every time.
MEDIA_CACHE_ROOT = Path(env_str("MEDIA_CACHE_ROOT", str(VAR_DIR / "media-cache")))

# --- Redis: the RQ queues and the live events. PostgreSQL stays the source of truth. ---------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "talkforge")
CHANNEL_LAYERS = {
    "default": {
        # Pub/sub layer: group_send is one PUBLISH, which keeps the engine-line → browser path short.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNEL_LAYER_PREFIX},
    }
}
# The dashboard's list: "default" plus every node queue RQ knows (rq_queues.py).
RQ_QUEUES = KnownQueues(REDIS_URL, {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": -1}})
RQ_SHOW_ADMIN_LINK = True
# Shared by every web process (a per-process cache would give each its own quota): DRF's throttle counters.
# core/cache.py: Django's RedisCache, with one connection pool per process instead of one per request.
CACHES = {"default": {"BACKEND": "core.cache.SharedRedisCache", "LOCATION": REDIS_URL}}

# --- Sign-in lockout (django-axes) -------------------------------------------------------------------
# Failed sign-ins (portal, admin, POST /api/token/) are counted per account *and* client address together:
# whoever guesses alice's password from one address is locked out of alice's account there, while alice
# at her own address, and everyone else, can still sign in (a stranger cannot lock her out).
# Attempts live in the database: shared by every process, kept when Redis is flushed, listed in the admin
# (a cache handler would keep them only as long as Redis does).
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
# Minutes a locked-out account/address waits; a further failed attempt while locked out restarts the wait.
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.proxies.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    # DRF's JSON, written by orjson (core/renderers.py).
    "DEFAULT_RENDERER_CLASSES": [
        "core.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    # JSON bodies with a size and depth limit and finite numbers only (core/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.LimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Requests per signed-in user, and per client address without one (/api/token/ takes passwords), counted
    # in Redis in one atomic step (core/throttling.py). The client address is the one TRUSTED_PROXY_COUNT
    # gives (core/proxies.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "core.throttling.AnonRateThrottle",
        "core.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("API_ANON_THROTTLE_RATE", "20/min"),
        "user": env_rate("API_USER_THROTTLE_RATE", "600/min"),
    },
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
API_MAX_JSON_BYTES = env_int("API_MAX_JSON_BYTES", 1024**2, minimum=1024)
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 20, minimum=2)
SPECTACULAR_SETTINGS = {
    "TITLE": "Talkforge API",
    "DESCRIPTION": (
        "Everything the portal does: avatars (upload, train, checkpoints, quality figures), videos, voices, "
        "conversations with your avatars, jobs and their logs, your account; GPU nodes for staff. "
        "Authenticate with `Authorization: Token <key>` (POST /api/token/). Another person's object is a 404."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.schema.add_summaries"],
}

# --- Jobs -----------------------------------------------------------------------------------------
# A running job's runner writes its heartbeat this often; the reconciler calls a worker dead when the
# heartbeat is older than JOB_HEARTBEAT_TIMEOUT.
JOB_HEARTBEAT_INTERVAL = env_float("JOB_HEARTBEAT_INTERVAL", 2.0, minimum=0.1)
JOB_HEARTBEAT_TIMEOUT = env_float("JOB_HEARTBEAT_TIMEOUT", 15.0, minimum=1.0)
# Progress and log lines reach the database at most this often (seconds); websockets get every line.
JOB_DB_FLUSH_INTERVAL = env_float("JOB_DB_FLUSH_INTERVAL", 0.5, minimum=0.01)
# Seconds between SIGTERM and SIGKILL when a job's process tree is stopped.
JOB_KILL_GRACE = env_float("JOB_KILL_GRACE", 5.0, minimum=0.0)
JOB_MAX_LOG_LINE = env_int("JOB_MAX_LOG_LINE", 4000, minimum=80)
# --- Accounts: who may sign up, and each person's limits (accounts/quotas.py; per-person in the admin) ---
# open: anyone; invite: with an invite code made in the admin; approval: staff activate new accounts in
# the admin; closed: no sign-up page. `make run` keeps it open; production defaults to approval.
SIGNUP_POLICY = env_str("SIGNUP_POLICY", "open")
if SIGNUP_POLICY not in {"open", "invite", "approval", "closed"}:
    raise ImproperlyConfigured(f"SIGNUP_POLICY={SIGNUP_POLICY!r}: use open, invite, approval or closed.")
QUOTA_CONCURRENT_JOBS = env_int("QUOTA_CONCURRENT_JOBS", 2, minimum=1)
QUOTA_QUEUED_JOBS = env_int("QUOTA_QUEUED_JOBS", 20, minimum=1)
QUOTA_GPU_HOURS_PER_MONTH = env_float("QUOTA_GPU_HOURS_PER_MONTH", 100.0, minimum=0.0)
QUOTA_STORAGE_GB = env_float("QUOTA_STORAGE_GB", 50.0, minimum=0.0)
QUOTA_MAX_JOB_HOURS = env_float("QUOTA_MAX_JOB_HOURS", 24.0, minimum=0.01)

# --- Uploads and avatars -----------------------------------------------------------------------------
# Files are streamed to disk as they arrive (never held whole in memory) and cut off past the limit.
FILE_UPLOAD_HANDLERS = [
    "avatars.uploads.SizeLimitedUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1)
AVATAR_MIN_SECONDS = env_float("AVATAR_MIN_SECONDS", 60.0, minimum=1.0)
AVATAR_MAX_SECONDS = env_float("AVATAR_MAX_SECONDS", 20 * 60.0, minimum=1.0)
AVATAR_MIN_SIDE_PIXELS = env_int("AVATAR_MIN_SIDE_PIXELS", 256, minimum=16)
QUALITY_SAMPLE_FRAMES = env_int("QUALITY_SAMPLE_FRAMES", 40, minimum=1)
QUALITY_MIN_FACE_PIXELS = env_int("QUALITY_MIN_FACE_PIXELS", 96, minimum=8)
QUALITY_MAX_FAILED_FRACTION = env_float("QUALITY_MAX_FAILED_FRACTION", 0.05, minimum=0.0)
QUALITY_SILENCE_DB = env_float("QUALITY_SILENCE_DB", -45.0)
# Video generation: the driving audio (uploaded, or spoken from text) must last this long.
VIDEO_MIN_AUDIO_SECONDS = env_float("VIDEO_MIN_AUDIO_SECONDS", 0.5, minimum=0.04)
VIDEO_MAX_AUDIO_SECONDS = env_float("VIDEO_MAX_AUDIO_SECONDS", 600.0, minimum=1.0)
VIDEO_MAX_TEXT_CHARS = env_int("VIDEO_MAX_TEXT_CHARS", 5000, minimum=1)

# --- GPU nodes ------------------------------------------------------------------------------------
# Fernet key that encrypts node passwords and private keys; derived from SECRET_KEY when unset.
NODE_SECRETS_KEY = env_str("NODE_SECRETS_KEY", "")
SSH_CONNECT_TIMEOUT = env_float("SSH_CONNECT_TIMEOUT", 10.0, minimum=0.5)
SSH_KEEPALIVE_INTERVAL = env_int("SSH_KEEPALIVE_INTERVAL", 15, minimum=1)
HOUSEKEEPING_INTERVAL = env_float("HOUSEKEEPING_INTERVAL", 5.0, minimum=0.2)
NODE_PROBE_INTERVAL = env_float("NODE_PROBE_INTERVAL", 60.0, minimum=1.0)
# A person hears when a training or a video they started ends: in their open pages always, and by e-mail
# (Django's EMAIL_* settings) when this is on and their account has an address (jobs/notify.py).
NOTIFY_BY_EMAIL = env_bool("NOTIFY_BY_EMAIL", False)
NOTIFY_SITE_URL = env_str("NOTIFY_SITE_URL", "")  # e.g. https://talkforge.example.com: the e-mails' links
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "talkforge@localhost")
# A node self-test (manage.py node_selftest) fails its disk check below this much free space in the workdir:
# one avatar's dataset and models take a few GB (frames, parsing, torso images, checkpoints).
NODE_SELFTEST_MIN_FREE_GB = env_float("NODE_SELFTEST_MIN_FREE_GB", 20.0, minimum=0.0)

# --- Chat: ASR → LLM → TTS ---------------------------------------------------------------------------
# Whisper model: a size the library downloads on first use ("tiny", "base", "small", …, into
# CHAT_WHISPER_DOWNLOAD_DIR or ~/.cache/whisper) or a local .pt checkpoint path.
CHAT_WHISPER_MODEL = env_str("CHAT_WHISPER_MODEL", "base")
CHAT_WHISPER_DOWNLOAD_DIR = env_str("CHAT_WHISPER_DOWNLOAD_DIR", "")
CHAT_WHISPER_DEVICE = env_str("CHAT_WHISPER_DEVICE", "")  # "" = cuda when available, else cpu
# Any OpenAI-compatible chat-completions endpoint; Zhipu GLM by default. Conversations may override all three.
CHAT_LLM_BASE_URL = env_str("CHAT_LLM_BASE_URL", "https://open.bigmodel.cn/api/paas/v4/")
CHAT_LLM_MODEL = env_str("CHAT_LLM_MODEL", "glm-4-flash")
CHAT_LLM_API_KEY = env_str("CHAT_LLM_API_KEY", "")
CHAT_LLM_TIMEOUT = env_float("CHAT_LLM_TIMEOUT", 60.0, minimum=1.0)
CHAT_LLM_HISTORY_TOKENS = env_int("CHAT_LLM_HISTORY_TOKENS", 3000, minimum=100)
# A conversation's own base URL (which must come with its own API key: CHAT_LLM_API_KEY only ever goes
# to CHAT_LLM_BASE_URL) only when the operator allows it, and only to public addresses; with
# CHAT_LLM_ALLOWED_HOSTS set, only to those host names ("api.openai.com", ".example.com" = and subdomains).
CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS = env_bool("CHAT_LLM_ALLOW_CUSTOM_ENDPOINTS", False)
CHAT_LLM_ALLOWED_HOSTS = env_list("CHAT_LLM_ALLOWED_HOSTS", [])
CHAT_SYSTEM_PROMPT_MAX_CHARS = env_int("CHAT_SYSTEM_PROMPT_MAX_CHARS", 4000, minimum=1)  # sent every turn
# XTTS v2 folder (config.json, model.pth, vocab.json[, speakers_xtts.pth]); without it voices are espeak-ng.
CHAT_XTTS_DIR = env_str("CHAT_XTTS_DIR", "")
CHAT_XTTS_DEVICE = env_str("CHAT_XTTS_DEVICE", "")  # "" = cuda when available, else cpu
CHAT_VOICE_MIN_SECONDS = env_float("CHAT_VOICE_MIN_SECONDS", 3.0, minimum=0.5)
CHAT_VOICE_MAX_SECONDS = env_float("CHAT_VOICE_MAX_SECONDS", 60.0, minimum=1.0)
CHAT_SENTENCE_MIN_CHARS = env_int("CHAT_SENTENCE_MIN_CHARS", 20, minimum=1)
# A reply spoken only or rendered by a live session may start with a clause ("Hello there,") of at least
# this many characters, spoken while the LLM writes the rest of the sentence (chat/sentences.py); 0: off.
CHAT_FIRST_FRAGMENT_MIN_CHARS = env_int("CHAT_FIRST_FRAGMENT_MIN_CHARS", 10, minimum=0)
CHAT_TURN_MAX_SECONDS = env_float("CHAT_TURN_MAX_SECONDS", 120.0, minimum=1.0)
# Hands-free: after this many ms of quiet the page sends the turn early (and withdraws it if the person goes
# on: static/js/voice_activity.js EARLY_MS); 0: only at the end of the turn (500 ms of quiet), so an LLM
# billed per request never answers a turn that is then withdrawn.
CHAT_EARLY_TURN_MS = env_int("CHAT_EARLY_TURN_MS", 250, minimum=0)
if CHAT_EARLY_TURN_MS >= 500:
    raise ImproperlyConfigured(
        f"CHAT_EARLY_TURN_MS={CHAT_EARLY_TURN_MS} must be below the 500 ms that end a turn (or 0: off)."
    )
# Live render sessions (chat/live.py): the avatar's model stays loaded on its node between sentences and
# each sentence streams to the browser as fragmented MP4 while it renders. LIVE_SESSIONS=false: every
# sentence is rendered as a clip (chat/video.py NodeRenderer).
LIVE_SESSIONS = env_bool("LIVE_SESSIONS", True)
LIVE_IDLE_SECONDS = env_float("LIVE_IDLE_SECONDS", 300.0, minimum=5.0)  # a session unused this long ends
LIVE_START_TIMEOUT = env_float("LIVE_START_TIMEOUT", 180.0, minimum=5.0)  # model load on the node
LIVE_RESERVED_MB = env_int("LIVE_RESERVED_MB", 0, minimum=0)  # per GPU, kept free of trainings/renders
LIVE_SESSIONS_PER_CPU_SLOT = env_int("LIVE_SESSIONS_PER_CPU_SLOT", 4, minimum=0)
LIVE_DEMO_FPS = env_float("LIVE_DEMO_FPS", 0.0, minimum=0.0)  # demo backend pace; 0: as fast as it goes
LIVE_SESSION_GPU_MB: dict[str, int] = {}  # per engine name: overrides the plug-in's session_gpu_mb

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"rq.worker": {"level": env_str("RQ_LOG_LEVEL", "WARNING")}},
}

# --- Health, metrics, logs and error reporting (talkforge/observability/) ---------------------------
# Kept in one block, added to the lists above rather than written into them, so it merges cleanly.
INSTALLED_APPS += ["talkforge.observability"]  # its ready() starts Sentry when SENTRY_DSN is set
# First: it gives every request its id, times it for /metrics, and answers /healthz, /readyz and /metrics
# before the host check and the HTTPS redirect (probes come by address, over plain HTTP).
MIDDLEWARE.insert(0, "talkforge.observability.middleware.ObservabilityMiddleware")
# /readyz gives each check this long (seconds); a check still running after that counts as failing.
READINESS_TIMEOUT = env_float("READINESS_TIMEOUT", 2.0, minimum=0.1)
# /readyz fails housekeeping when its last round is older than this (a round probes every node).
HOUSEKEEPING_STALE_AFTER = env_float("HOUSEKEEPING_STALE_AFTER", 120.0, minimum=1.0)
# /metrics answers a scraper that sends ``Authorization: Bearer <METRICS_TOKEN>`` or comes from one of
# METRICS_ALLOWED_NETWORKS (CIDRs, the client address as TRUSTED_PROXY_COUNT gives it); with neither set
# it does not exist (404).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("METRICS_TOKEN is shorter than 24 characters: use a long random string.")
METRICS_ALLOWED_NETWORKS = env_networks("METRICS_ALLOWED_NETWORKS", [])
# plain: "time level logger message"; json: one JSON object per line (time, level, logger, message,
# request_id, exception).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json.")
LOGGING["filters"] = {"request_id": {"()": "talkforge.observability.logs.RequestIdFilter"}}
LOGGING["formatters"]["json"] = {"()": "talkforge.observability.logs.JsonFormatter"}
LOGGING["handlers"]["console"] |= {"filters": ["request_id"], "formatter": LOG_FORMAT}
# Errors go to Sentry (web, workers, housekeeping) only when SENTRY_DSN is set; no personal data is sent.
SENTRY_DSN = env_str("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0.0)
if SENTRY_TRACES_SAMPLE_RATE > 1:
    raise ImproperlyConfigured("SENTRY_TRACES_SAMPLE_RATE is a share of requests: use 0 to 1.")
