"""Settings for the whole project, read from the environment.

Defaults suit the embedded stack: SQLite under var/, and SQS as the Celery
broker on the same endpoint as S3. `make dev` points AWS_ENDPOINT_URL at the
moto server it starts; left unset, the same settings talk to AWS itself.
Production sets SECRET_KEY, ALLOWED_HOSTS (which turns DEBUG off) and DATABASE_URL.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# Naming the hosts to serve means a real deployment: DEBUG (and with it the
# dev secret key) must then be asked for, so forgetting DEBUG=false cannot
# publish tracebacks or a known key.
_hosts = env_list("ALLOWED_HOSTS", [])
DEBUG = env_bool("DEBUG", not _hosts)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production-0123456789"

ALLOWED_HOSTS = _hosts or (["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "uploads",
    # Last, as its documentation asks: counts failed sign-ins and locks out.
    "axes",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as its documentation asks; outside CSP, so its lockout page has
    # the policy too.
    "axes.middleware.AxesMiddleware",
]

if not DEBUG:
    # Static files served by the app itself, compressed and cached forever.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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
                "uploads.context_processors.unread_notifications",
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL says otherwise.
# Local state of the embedded stack: database, saved bucket, mail.
VAR_DIR = Path(os.environ.get("VAR_DIR") or BASE_DIR / "var")
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and IMMEDIATE transactions let the web server, the consumer and the
    # Celery worker share one SQLite file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so that worker processes started by the tests share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("SQLITE_TEST_NAME", str(VAR_DIR / "test-db.sqlite3"))
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Password guessing, on the site's sign-in and the admin's: after
# LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that
# pair is refused (429) for LOGIN_LOCKOUT_MINUTES. By pair, so that a guesser
# cannot lock a user out from everywhere, nor everyone behind one address.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Failed attempts are kept (and cleared on success); successful sign-ins are
# not logged row by row.
AXES_DISABLE_ACCESS_LOG = True
# No start-up banner in every process (it would precede commands' own output).
AXES_VERBOSE = False
# Behind a proxy every request comes from the proxy's address: the client's
# is the one the proxy appended to X-Forwarded-For.
BEHIND_HTTPS_PROXY = env_bool("BEHIND_HTTPS_PROXY", False)
AXES_CLIENT_IP_CALLABLE = "uploads.views.client_address"
# Unconfirmed sign-ups one client address may make in an hour: each mails
# an address typed into the form.
SIGNUPS_PER_ADDRESS_PER_HOUR = env_int("SIGNUPS_PER_ADDRESS_PER_HOUR", 5)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "upload_page"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# --- AWS: S3 for the files, SQS for S3's events (and, by default, Celery) ---

# Unset or empty: AWS itself. A URL: an S3/SQS-compatible endpoint, such as the
# moto server that `make dev` starts on 127.0.0.1:9090.
AWS_ENDPOINT_URL = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
_endpoint = urlsplit(AWS_ENDPOINT_URL) if AWS_ENDPOINT_URL else None
# An endpoint on this machine is the embedded one (moto): dummy credentials.
EMBEDDED_AWS = bool(_endpoint and _endpoint.hostname in ("127.0.0.1", "localhost", "::1"))
AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME", "us-east-1")
# Credentials: explicit ones when given, the embedded endpoint's dummy pair
# when using it, otherwise boto3's usual chain (instance roles, profiles...).
AWS_ACCESS_KEY_ID = os.environ.get("AWS_ACCESS_KEY_ID") or ("test" if EMBEDDED_AWS else None)
AWS_SECRET_ACCESS_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY") or (
    "test" if EMBEDDED_AWS else None
)
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "uploads-media")
S3_EVENTS_QUEUE = os.environ.get("S3_EVENTS_QUEUE", "upload-events")
S3_EVENTS_DLQ = os.environ.get("S3_EVENTS_DLQ", f"{S3_EVENTS_QUEUE}-dlq")
# A message that failed this many receives moves to the dead-letter queue.
S3_EVENTS_MAX_RECEIVES = env_int("S3_EVENTS_MAX_RECEIVES", 5)
# Seconds a received event stays invisible to other consumers while handled.
S3_EVENTS_VISIBILITY_TIMEOUT = env_int("S3_EVENTS_VISIBILITY_TIMEOUT", 60)

# Origins allowed to POST files to the bucket and GET them (bucket CORS).
# Where users reach the site: links in emails, and the origin the bucket's
# CORS rules let post files (`make dev` honours PORT).
_dev_port = env_int("PORT", 8000)
SITE_URL = os.environ.get("SITE_URL", f"http://127.0.0.1:{_dev_port}").rstrip("/")
_site = urlsplit(SITE_URL)
UPLOAD_CORS_ORIGINS = env_list(
    "UPLOAD_CORS_ORIGINS",
    [f"http://127.0.0.1:{_dev_port}", f"http://localhost:{_dev_port}"]
    if DEBUG
    else [f"{_site.scheme}://{_site.netloc}"],
)

# Where the browser posts files and loads images from, for the
# Content-Security-Policy: the endpoint, or the bucket's AWS addresses.
STORAGE_ORIGINS = env_list(
    "STORAGE_ORIGINS",
    [f"{_endpoint.scheme}://{_endpoint.netloc}"]
    if _endpoint
    else [
        f"https://{AWS_STORAGE_BUCKET_NAME}.s3.amazonaws.com",
        f"https://{AWS_STORAGE_BUCKET_NAME}.s3.{AWS_S3_REGION_NAME}.amazonaws.com",
    ]
    # A bucket name with dots cannot be a TLS host name: path-style URLs.
    + (
        ["https://s3.amazonaws.com", f"https://s3.{AWS_S3_REGION_NAME}.amazonaws.com"]
        if "." in AWS_STORAGE_BUCKET_NAME
        else []
    ),
)
# No inline script or style anywhere (the admin's included): a script that
# slips into a page through a filename or a bug has nowhere to run.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # blob: for the page's local previews while a file uploads.
        "img-src": [SELF, "data:", "blob:", *STORAGE_ORIGINS],
        "connect-src": [SELF, *STORAGE_ORIGINS],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# How long a signed GET link to an original or a thumbnail stays valid.
DOWNLOAD_URL_EXPIRES = env_int("DOWNLOAD_URL_EXPIRES", 300)
STORAGES = {
    "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "region_name": AWS_S3_REGION_NAME,
            "endpoint_url": AWS_ENDPOINT_URL or None,
            "access_key": AWS_ACCESS_KEY_ID,
            "secret_key": AWS_SECRET_ACCESS_KEY,
            "signature_version": "s3v4",
            # The bucket is private: every URL handed out is signed and short-lived.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": DOWNLOAD_URL_EXPIRES,
            # Thumbnail keys are deterministic: a rerun overwrites, never duplicates.
            "file_overwrite": True,
            # Custom endpoints (moto, MinIO...) want path-style addressing.
            "addressing_style": "path" if AWS_ENDPOINT_URL else None,
        },
    },
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}

# --- Upload rules ---

UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 100 * 1024 * 1024)
UPLOAD_ALLOWED_TYPES = env_list(
    "UPLOAD_ALLOWED_TYPES",
    [
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/heic",
        "image/heif",
        "image/avif",
        "application/pdf",
    ],
)
UPLOAD_URL_EXPIRES = env_int("UPLOAD_URL_EXPIRES", 10 * 60)
# Forms one user may hold at once (and uploads in processing): a cap on abuse.
UPLOAD_MAX_IN_FLIGHT = env_int("UPLOAD_MAX_IN_FLIGHT", 100)
# Bytes one user may keep in the bucket, pending uploads included (0: no limit).
UPLOAD_USER_QUOTA_BYTES = env_int("UPLOAD_USER_QUOTA_BYTES", 10 * 1024**3)
UPLOAD_PAGE_SIZE = env_int("UPLOAD_PAGE_SIZE", 24)
# Longest side, in pixels, of each thumbnail made for an image.
THUMBNAIL_SIZES = [int(size) for size in env_list("THUMBNAIL_SIZES", ["256", "1024"])]
# Images with more pixels are refused before any pixel is decoded.
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000)

# --- Celery ---


def _sqs_broker_url() -> str:
    """SQS on the same endpoint and credentials as S3 (AWS's own chain if none)."""
    credentials = ""
    if AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY:
        credentials = (
            f"{quote(AWS_ACCESS_KEY_ID, safe='')}:{quote(AWS_SECRET_ACCESS_KEY, safe='')}@"
        )
    return f"sqs://{credentials}{_endpoint.netloc if _endpoint else ''}"


CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _sqs_broker_url()
# Longest a task may run; the broker's visibility timeout must exceed it, or
# SQS hands a running task to a second worker.
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
# The soft limit lets a task record its outcome before the hard limit kills it.
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT * 9 // 10)
CELERY_BROKER_VISIBILITY_TIMEOUT = env_int(
    "CELERY_BROKER_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT * 2
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "region": AWS_S3_REGION_NAME,
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
    "wait_time_seconds": 10,
    # Pause after an empty long poll: with 10-second long polls it costs no
    # requests, and a short one saved ~80 ms from S3's 2xx to ready (bench/).
    "polling_interval": 0.02,
    "queue_name_prefix": os.environ.get("CELERY_QUEUE_PREFIX", "uploads-"),
    "is_secure": bool(_endpoint is None or _endpoint.scheme == "https"),
}
CELERY_TASK_DEFAULT_QUEUE = "images"
CELERY_TASK_ROUTES = {
    "uploads.tasks.send_notification_email": {"queue": "notifications"},
    "uploads.tasks.send_confirmation_email": {"queue": "notifications"},
}
# Tasks are idempotent, so a task lost with its worker is run again.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Only for tests that run tasks in-process.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- Email ---

EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# How long the link that confirms a signed-up address stays valid (3 days).
CONFIRM_EMAIL_MAX_AGE = env_int("CONFIRM_EMAIL_MAX_AGE", 3 * 24 * 3600)
# A mail server that stops answering must not hold a worker until its time limit.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "uploads@localhost")

# --- Security for production ---

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Load balancers probe over plain HTTP and want the answer, not a redirect.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    # Only behind a proxy that sets X-Forwarded-Proto itself (and strips the
    # client's): otherwise anyone could claim HTTPS.
    if BEHIND_HTTPS_PROXY:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "boto3": {"level": "WARNING"},
        "werkzeug": {"level": "WARNING"},
        # Lockouts are warnings; the routine bookkeeping of each sign-in is not news.
        "axes": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
    },
}

# API callers get a JSON error instead of Django's HTML page.
CSRF_FAILURE_VIEW = "uploads.views.csrf_failure"
