from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from kombu.exceptions import KombuError

from uploads import filetypes, notifications, s3
from uploads.forms import SignUpForm, StartUploadForm
from uploads.models import Notification, Status, UnconfirmedEmail, Upload
from uploads.tasks import send_confirmation_email

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]

# How often a user may ask for the confirmation link again.
RESEND_CONFIRMATION_EVERY = timedelta(minutes=2)
# Notification ids one "read" call may name.
MAX_IDS = 1000
# The largest value a (big) integer primary key can hold.
MAX_PK = 2**63 - 1

# The order in which one error code wins over another when several fields fail.
FORM_ERROR_CODES = ("invalid_filename", "type_not_allowed", "too_large")


def error(code: str, message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def api_login_required(view: View) -> View:
    """Like login_required, but answers 401 JSON instead of redirecting."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return error("not_authenticated", "Sign in first.", status=401)
        return view(request, *args, **kwargs)

    return wrapper


def api_methods(*methods: str) -> Callable[[View], View]:
    """Like require_http_methods, but answers 405 in the API's JSON error shape."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error(
                    "method_not_allowed", f"Use {' or '.join(methods)} here.", status=405
                )
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for the whole site: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error("not_found", "There is nothing at this address.", status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Exception())


def api_bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """400 for the whole site (a body over the size limit, say): JSON under /api/."""
    if request.path.startswith("/api/"):
        return error("invalid", "The request could not be read; it may be too large.")
    from django.views.defaults import bad_request

    return bad_request(request, exception or Exception())


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if request.path.startswith("/api/"):
        return error("csrf_failed", "The request lacks a valid CSRF token; reload the page.", 403)
    from django.views.csrf import csrf_failure as default_csrf_failure

    return default_csrf_failure(request, reason)


def signed_in_user(request: HttpRequest) -> User:
    """The user of a request that api_login_required or login_required let through."""
    return cast(User, request.user)


def read_json(request: HttpRequest) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: deeply nested arrays, which json cannot read.
        return None
    return body if isinstance(body, dict) else None


def owned_upload(request: HttpRequest, upload_id: Any) -> Upload | None:
    """The request user's upload, or None: another user's looks just like a missing one."""
    return Upload.objects.owned_by(request.user).filter(pk=upload_id).first()


def storage_unavailable() -> JsonResponse:
    return error(
        "storage_unavailable",
        "Storage is not answering right now; please try again in a moment.",
        status=503,
    )


def api_server_error(request: HttpRequest) -> HttpResponse:
    """500 for the whole site: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error("server_error", "Something went wrong on our side; it has been logged.", 500)
    from django.views.defaults import server_error

    return server_error(request)


def not_found() -> JsonResponse:
    return error("not_found", "No such upload.", status=404)


def serialize_upload(upload: Upload) -> dict[str, Any]:
    # The original is handed out only once its bytes have been verified.
    ready = upload.status == Status.READY
    return {
        "id": str(upload.id),
        "filename": upload.filename,
        "status": upload.status,
        "size": upload.size,
        "content_type": upload.content_type,
        "created_at": upload.created_at.isoformat(),
        "error": upload.error,
        "url": upload.signed_url() if ready else None,
        "width": upload.width,
        "height": upload.height,
        "thumbnails": [
            {"name": t.name, "width": t.width, "height": t.height, "url": t.file.url}
            for t in upload.thumbnails.all()
        ]
        if ready
        else [],
    }


def encode_cursor(created_at: datetime, pk: Any) -> str:
    raw = f"{created_at.isoformat()}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def keyset_page(
    request: HttpRequest, queryset: QuerySet[Any], page_size: int
) -> tuple[list[Any], str | None] | JsonResponse:
    """Newest-first keyset pagination: stable while new rows arrive, fast at any depth."""
    cursor = request.GET.get("cursor")
    if cursor:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            created_text, pk_text = raw.split("|", 1)
            created_at = datetime.fromisoformat(created_text)
            if created_at.tzinfo is None:
                raise ValueError("naive datetime")
            # Raises OverflowError for the first and last hours of years 1 and 9999.
            created_at = created_at.astimezone(UTC)
            pk = queryset.model._meta.pk.to_python(pk_text)
            if isinstance(pk, int) and not 0 < pk <= MAX_PK:
                raise ValueError("id out of range")
        except (ValueError, OverflowError, ValidationError, binascii.Error, UnicodeDecodeError):
            return error("invalid", "The cursor is not valid.")
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk)
        )
    rows = list(queryset.order_by("-created_at", "-pk")[: page_size + 1])
    next_url = None
    if len(rows) > page_size:
        rows = rows[:page_size]
        last = rows[-1]
        next_url = f"{request.path}?cursor={encode_cursor(last.created_at, last.pk)}"
    return rows, next_url


# --- Pages ---


@login_required
@require_GET
def upload_page(request: HttpRequest) -> HttpResponse:
    config = {
        "maxBytes": settings.UPLOAD_MAX_BYTES,
        "downloadUrlExpires": settings.DOWNLOAD_URL_EXPIRES,
        "allowedTypes": {t: filetypes.describe(t) for t in settings.UPLOAD_ALLOWED_TYPES},
        "uploadsUrl": reverse("api_uploads"),
        "notificationsUrl": reverse("api_notifications"),
        "notificationsReadUrl": reverse("api_notifications_read"),
    }
    user = signed_in_user(request)
    context = {"config": config, "unconfirmed": UnconfirmedEmail.is_unconfirmed(user)}
    return render(request, "uploads/index.html", context)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("upload_page")
    form = SignUpForm(request.POST or None)
    address = client_address(request)
    if request.method == "POST" and form.is_valid():
        limit = settings.SIGNUPS_PER_ADDRESS_PER_HOUR
        if UnconfirmedEmail.recent_signups_from(address, timedelta(hours=1)) >= limit:
            logger.warning("sign-up refused: %s made %s accounts in the last hour", address, limit)
            form.add_error(
                None, "Too many accounts were made from your network lately; try again later."
            )
            return render(request, "registration/signup.html", {"form": form}, status=429)
        try:
            with transaction.atomic():
                user = form.save()
                UnconfirmedEmail.objects.create(user=user, signup_address=address)
                # Robust: a broker outage must not turn a made account into a
                # 500; the user can ask for the link again from the page.
                transaction.on_commit(lambda: send_confirmation_email.delay(user.pk), robust=True)
        except IntegrityError:
            # The same username taken by a sign-up a moment ago, after our check.
            form.add_error("username", "A user with that username already exists.")
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("upload_page")
    return render(request, "registration/signup.html", {"form": form})


@require_http_methods(["GET", "POST"])
def confirm_email(request: HttpRequest, token: str) -> HttpResponse:
    """Confirm a signed-up address from the emailed link.

    GET only shows a button: mail scanners that follow links must not
    confirm an address on someone's behalf.
    """
    user = notifications.user_for_token(token)
    if user is None:
        return render(request, "registration/confirm_email.html", {"invalid": True}, status=400)
    confirmed = not UnconfirmedEmail.is_unconfirmed(user)
    if request.method == "POST" and not confirmed:
        UnconfirmedEmail.objects.filter(user=user).delete()
        logger.info("user %s confirmed their email address", user.pk)
        confirmed = True
    return render(
        request, "registration/confirm_email.html", {"address": user.email, "confirmed": confirmed}
    )


@login_required
@require_http_methods(["POST"])
def resend_confirmation(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    unconfirmed = UnconfirmedEmail.objects.filter(user=user).first()
    if unconfirmed is None:
        return redirect("upload_page")  # confirmed already
    if unconfirmed.resends >= UnconfirmedEmail.MAX_RESENDS:
        messages.info(
            request,
            "The link has been sent several times already: look in your inbox and spam "
            "folder, or ask an administrator to confirm your address.",
        )
    elif not UnconfirmedEmail.claim_resend(user, every=RESEND_CONFIRMATION_EVERY):
        messages.info(request, "We sent a link a moment ago; look in your inbox (and spam folder).")
    else:
        try:
            send_confirmation_email.delay(user.pk)
        except (KombuError, OSError):
            logger.exception("could not queue the confirmation email of user %s", user.pk)
            # Give the claim back, so that asking again works at once.
            UnconfirmedEmail.objects.filter(user=user).update(
                sent_at=unconfirmed.sent_at, resends=unconfirmed.resends
            )
            messages.error(request, "The link could not be sent just now; try again in a minute.")
        else:
            messages.success(request, f"We sent a new link to {user.email}.")
    return redirect("upload_page")


def client_address(request: HttpRequest) -> str | None:
    """The client's address; behind a proxy, the last one X-Forwarded-For names.

    Entries before that were sent by the client and prove nothing; the proxy
    appends the address it saw. Without BEHIND_HTTPS_PROXY the header is
    anyone's to forge, so the connection's address is used.
    """
    if not settings.BEHIND_HTTPS_PROXY:
        return request.META.get("REMOTE_ADDR")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    addresses = [part.strip() for part in forwarded.split(",") if part.strip()]
    return addresses[-1] if addresses else request.META.get("REMOTE_ADDR")


# --- Uploads API ---


@never_cache
@api_login_required
@api_methods("GET", "POST")
def uploads_collection(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        page = keyset_page(
            request,
            Upload.objects.owned_by(request.user).prefetch_related("thumbnails"),
            settings.UPLOAD_PAGE_SIZE,
        )
        if isinstance(page, JsonResponse):
            return page
        rows, next_url = page
        return JsonResponse({"results": [serialize_upload(u) for u in rows], "next": next_url})
    return start_upload(request)


def form_error(form: StartUploadForm) -> JsonResponse:
    """One error for the whole form: malformed input first, then the named codes."""
    found: dict[str, str] = {}
    for field, field_errors in form.errors.as_data().items():
        for problem in field_errors:
            code = str(problem.code)
            if field == "filename" and code != "required":
                code = "invalid_filename"  # null bytes and the like
            found.setdefault(code if code in FORM_ERROR_CODES else "invalid", problem.messages[0])
    if "invalid" in found:
        fields = ", ".join(sorted(form.errors))
        return error(
            "invalid",
            f"Missing or invalid: {fields}. Send filename, content_type and a positive size.",
        )
    code = next(c for c in FORM_ERROR_CODES if c in found)
    return error(code, found[code])


def human_bytes(count: int) -> str:
    # Plain spaces: the message is JSON text, not HTML.
    return str(filesizeformat(count)).replace("\xa0", " ")


def refuse_over_caps(user: User, size: int) -> JsonResponse | None:
    """The error for a user past the in-flight cap or the storage quota, or None."""
    if Upload.objects.owned_by(user).in_flight().count() >= settings.UPLOAD_MAX_IN_FLIGHT:
        return error(
            "too_many_uploads",
            f"You have {settings.UPLOAD_MAX_IN_FLIGHT} uploads in progress; "
            "wait for some to finish.",
            status=429,
        )
    quota = settings.UPLOAD_USER_QUOTA_BYTES
    if quota:
        used = Upload.objects.owned_by(user).stored_bytes()
        if used + size > quota:
            return error(
                "quota_exceeded",
                f"This file would take you past your {human_bytes(quota)} of storage "
                f"({human_bytes(used)} used): delete some files first.",
                status=403,
            )
    return None


def start_upload(request: HttpRequest) -> HttpResponse:
    body = read_json(request)
    if body is None:
        return error("invalid", "The request body must be a JSON object.")
    form = StartUploadForm(body)
    if not form.is_valid():
        return form_error(form)
    user = signed_in_user(request)
    # One start at a time per user, so that parallel requests cannot all pass
    # the caps below together.
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()
        refusal = refuse_over_caps(user, form.cleaned_data["size"])
        if refusal is not None:
            return refusal
        upload = Upload.start(user, **form.cleaned_data)
    expires_in = settings.UPLOAD_URL_EXPIRES
    try:
        post = s3.presigned_post(upload.key, upload.content_type, upload.size, expires_in)
    except BotoCoreError:
        # No credentials, typically: nothing was handed out, so nothing is kept.
        logger.exception("could not sign an upload form")
        upload.delete()
        return storage_unavailable()
    logger.info("upload %s started by user %s: %s bytes", upload.pk, request.user.pk, upload.size)
    return JsonResponse(
        {
            "id": str(upload.id),
            "url": post["url"],
            "fields": post["fields"],
            "expires_at": (timezone.now() + timedelta(seconds=expires_in)).isoformat(),
            "upload": serialize_upload(upload),
        },
        status=201,
    )


@never_cache
@api_login_required
@api_methods("GET", "DELETE")
def upload_detail(request: HttpRequest, upload_id: Any) -> HttpResponse:
    upload = owned_upload(request, upload_id)
    if upload is None:
        return not_found()
    if request.method == "DELETE":
        upload.delete_with_objects()
        return HttpResponse(status=204)
    return JsonResponse(serialize_upload(upload))


@api_login_required
@api_methods("POST")
def complete_upload(request: HttpRequest, upload_id: Any) -> HttpResponse:
    upload = owned_upload(request, upload_id)
    if upload is None:
        return not_found()
    try:
        upload.accept_arrival()
    except (BotoCoreError, ClientError, KombuError):
        # Storage or the task queue is down; S3's own event will finish the job.
        logger.exception("could not check the arrival of upload %s", upload.pk)
        return storage_unavailable()
    upload.refresh_from_db()
    if upload.status == Status.PENDING:
        return error("not_uploaded", "The file has not arrived in storage yet.", status=409)
    return JsonResponse(serialize_upload(upload))


# --- Notifications API ---


@never_cache
@api_login_required
@api_methods("GET")
def notifications_collection(request: HttpRequest) -> HttpResponse:
    mine = Notification.objects.filter(owner=signed_in_user(request))
    page = keyset_page(request, mine, 20)
    if isinstance(page, JsonResponse):
        return page
    rows, next_url = page
    return JsonResponse(
        {
            "results": [
                {
                    "id": n.pk,
                    "upload_id": str(n.upload_id),
                    "kind": n.kind,
                    "message": n.message,
                    "read": n.read,
                    "created_at": n.created_at.isoformat(),
                }
                for n in rows
            ],
            "next": next_url,
            "unread": mine.filter(read=False).count(),
        }
    )


@api_login_required
@api_methods("POST")
def notifications_read(request: HttpRequest) -> HttpResponse:
    """Mark the given notification ids read, or all of them without ids."""
    body = read_json(request)
    if body is None:
        return error("invalid", "The request body must be a JSON object.")
    unread = Notification.objects.filter(owner=signed_in_user(request), read=False)
    ids = body.get("ids")
    if ids is not None:
        if (
            not isinstance(ids, list)
            or len(ids) > MAX_IDS
            or not all(type(i) is int and 0 < i <= MAX_PK for i in ids)
        ):
            return error("invalid", f"ids must be a list of at most {MAX_IDS} notification ids.")
        unread = unread.filter(pk__in=ids)
    marked = unread.update(read=True)
    return JsonResponse({"marked": marked})


# --- Health ---


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    checks: dict[str, str] = {}
    probes: dict[str, Callable[[], object]] = {
        "database": lambda: connection.ensure_connection(),
        "storage": s3.check_bucket,
        "queue": lambda: s3.check_queue(settings.S3_EVENTS_QUEUE),
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            logger.warning("health check %s failed: %s", name, exc)
            checks[name] = "down"
    down = [name for name, state in checks.items() if state != "ok"]
    return JsonResponse(
        {"status": "down" if down else "ok", "checks": checks}, status=503 if down else 200
    )
