"""Staff pages: uploads, their thumbnails and notifications, and a summary.

What the system owns is read-only: keys, sizes and statuses change only
through the actions here (or the commands), never through a form.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from uploads import filetypes, maintenance, s3
from uploads.models import Notification, Status, Thumbnail, UnconfirmedEmail, Upload

logger = logging.getLogger(__name__)

# Statuses whose original is in the bucket.
HAS_ORIGINAL = (Status.PROCESSING, Status.READY, Status.FAILED)
# An admin action handles at most this many uploads in one request; larger
# jobs belong to the manage.py commands, which page through them.
MAX_ACTION_ROWS = 10_000
# Past this many, the delete confirmation says how many rather than listing each.
SUMMARIZE_DELETES_OVER = 100
PROBLEMS = (Status.REJECTED, Status.FAILED)


def format_duration(duration: timedelta | None) -> str:
    if duration is None:
        return "—"
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes / 60:.1f} h"


# Keys are uploads/<id>.<ext> and thumbs/<id>/<size>.webp.
KEY = re.compile(r"(?:uploads|thumbs)/([0-9a-fA-F-]{32,36})\b")


def parse_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


# A search by owner looks at the uploads of this many matching users at most.
MAX_OWNERS = 100


def owners_matching(term: str) -> list[Any]:
    """Users whose username or email contains the term (any case).

    At most MAX_OWNERS + 1, so that callers can tell there are more than
    they search. The users table is far smaller than the uploads table, so
    it is searched first and the uploads are then found through the owner
    index.
    """
    users = get_user_model().objects.filter(Q(username__icontains=term) | Q(email__icontains=term))
    return list(users.order_by("pk").values_list("pk", flat=True)[: MAX_OWNERS + 1])


def owned_by_matching(model_admin: admin.ModelAdmin, request: HttpRequest, term: str) -> Q:
    """Rows of the first MAX_OWNERS users matching `term`; says so when more match."""
    owners = owners_matching(term)
    if len(owners) > MAX_OWNERS:
        model_admin.message_user(
            request,
            f"More than {MAX_OWNERS} users match {term!r}; only the uploads of the first "
            f"{MAX_OWNERS} are shown. Search for a fuller username or email.",
            messages.WARNING,
        )
    return Q(owner__in=owners[:MAX_OWNERS])


def upload_search(model_admin: admin.ModelAdmin, request: HttpRequest, term: str) -> Q:
    """What a search term finds, each kind of term through an index where it can.

    An id or a key finds one upload by primary key; an email, its owner's
    uploads; anything else, uploads by owner username or filename (through a
    trigram index on PostgreSQL, migration 0003).
    """
    upload_id = parse_uuid(term)
    if upload_id is not None:
        return Q(pk=upload_id)
    key = KEY.match(term)
    if key and (upload_id := parse_uuid(key[1])) is not None:
        return Q(pk=upload_id) | Q(file=term)
    owned = owned_by_matching(model_admin, request, term)
    return owned if "@" in term else Q(filename__icontains=term) | owned


class CappedCountPaginator(Paginator):
    """Counts no further than `cap` rows.

    Past that, an exact count of a large table costs a scan of it on every
    page view, and nobody pages that far; the list says "more than 10000"
    (templates/admin/uploads/pagination.html) and offers the first pages.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, QuerySet):
            return len(rows)
        # Unordered, so that any index on the filtered columns can answer.
        return rows.order_by()[: self.cap + 1].count()


class TypeFilter(admin.SimpleListFilter):
    """By declared type: choices from the known types, not a DISTINCT over every row."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(mime, description) for mime, (_, description) in filetypes.KNOWN_TYPES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(content_type=self.value()) if self.value() else queryset


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ThumbnailInline(ReadOnlyInline):
    model = Thumbnail
    fields = readonly_fields = ("preview", "name", "width", "height", "size", "file", "created_at")

    @admin.display(description="thumbnail")
    def preview(self, thumbnail: Thumbnail) -> str:
        return format_html(
            '<a href="{0}"><img src="{0}" alt="" class="upload-thumbnail"></a>',
            thumbnail.file.url,
        )

    @admin.display(description="size")
    def size(self, thumbnail: Thumbnail) -> str:
        return filesizeformat(thumbnail.bytes)


class NotificationInline(ReadOnlyInline):
    model = Notification
    fields = readonly_fields = ("kind", "message", "read", "created_at", "emailed_at")


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    class Media:
        # Sizes for the previews: the Content-Security-Policy allows no inline style.
        css = {"all": ("uploads-admin.css",)}

    list_display = (
        "preview",
        "filename",
        "owner",
        "status",
        "human_size",
        "detected_type",
        "created_at",
        "processing_time",
    )
    list_display_links = ("preview", "filename")
    list_filter = ("status", TypeFilter, "created_at")
    # Shows the search box; get_search_results decides how each is searched.
    search_fields = ("id", "file", "owner__username", "owner__email", "filename")
    search_help_text = "Upload id, S3 key, owner's username or email, or part of the filename."
    list_select_related = ("owner",)
    # Counting every row of a large table on each page view is what makes
    # admin lists slow: no total next to the filtered count, and that capped.
    show_full_result_count = False
    paginator = CappedCountPaginator
    # Sorting by an unindexed column would sort the whole table.
    sortable_by = ("created_at",)
    ordering = ("-created_at",)
    actions = ("reprocess", "resend_notification", "delete_selected")
    inlines = (ThumbnailInline, NotificationInline)
    fieldsets = (
        (None, {"fields": ("id", "filename", "owner", "status", "error", "original")}),
        (
            "File",
            {
                "fields": (
                    "file",
                    "content_type",
                    "size",
                    "verified_size",
                    "etag",
                    "detected_type",
                    "width",
                    "height",
                )
            },
        ),
        (
            "Timestamps",
            {
                "fields": (
                    "created_at",
                    "uploaded_at",
                    "processed_at",
                    "processing_time",
                    "updated_at",
                    "unfinished_runs",
                )
            },
        ),
    )
    readonly_fields = (
        "id",
        "filename",
        "owner",
        "status",
        "error",
        "original",
        "file",
        "content_type",
        "size",
        "verified_size",
        "etag",
        "detected_type",
        "width",
        "height",
        "created_at",
        "uploaded_at",
        "processed_at",
        "processing_time",
        "updated_at",
        "unfinished_runs",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Upload]:
        return super().get_queryset(request).prefetch_related("thumbnails")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Upload], search_term: str
    ) -> tuple[QuerySet[Upload], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(upload_search(self, request, term)), False

    # --- permissions: uploads are made by the API and changed by actions only ---

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Upload | None = None) -> bool:
        # Without an object this gates the actions; with one, the form: view only.
        return obj is None and super().has_change_permission(request)

    # --- columns and fields ---

    @admin.display(description="preview")
    def preview(self, upload: Upload) -> str:
        # Thumbnails are ordered smallest first and prefetched with the page.
        thumbnails = list(upload.thumbnails.all())
        if not thumbnails:
            return "—"
        return format_html(
            '<img src="{}" alt="" loading="lazy" class="upload-preview">',
            thumbnails[0].file.url,
        )

    @admin.display(description="size")
    def human_size(self, upload: Upload) -> str:
        return filesizeformat(upload.verified_size or upload.size)

    @admin.display(description="processing time")
    def processing_time(self, upload: Upload) -> str:
        if upload.processed_at is None or upload.uploaded_at is None:
            return "—"
        return format_duration(upload.processed_at - upload.uploaded_at)

    @admin.display(description="original")
    def original(self, upload: Upload) -> str:
        if upload.status not in HAS_ORIGINAL:
            return "—"
        # Served as the verified type, like the owner's own link.
        return format_html(
            '<a href="{}">{}</a> (signed link, valid for {} s)',
            upload.signed_url(),
            upload.key,
            getattr(upload.file.storage, "querystring_expire", "?"),
        )

    # --- actions ---

    @admin.action(
        description="Reprocess selected uploads (regenerate thumbnails)", permissions=["change"]
    )
    def reprocess(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        if self.refuse_large(request, queryset):
            return
        try:
            result = maintenance.reprocess(queryset, force=True)
        except Exception as error:
            logger.exception("queueing reprocessing failed")
            self.message_user(request, f"Queueing failed: {error}", messages.ERROR)
            return
        skipped = queryset.count() - result.thumbnails - result.retried - result.restarted
        self.message_user(
            request,
            f"Queued thumbnails for {result.thumbnails} ready images, processing for "
            f"{result.retried} failed uploads and {result.restarted} stuck in processing; "
            f"{skipped} skipped (pending, rejected, expired, or processing on time).",
            messages.SUCCESS,
        )

    def refuse_large(self, request: HttpRequest, queryset: QuerySet[Upload]) -> bool:
        """True (with a message) for a selection larger than one request should handle."""
        if queryset.count() <= MAX_ACTION_ROWS:
            return False
        self.message_user(
            request,
            f"That is more than {MAX_ACTION_ROWS:,} uploads, too many for one request: narrow "
            "the selection, or use manage.py reprocess_uploads / cleanup_uploads.",
            messages.ERROR,
        )
        return True

    @admin.action(description="Delete selected uploads and their files", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Upload]) -> Any:
        if self.refuse_large(request, queryset):
            return None
        return django_delete_selected(self, request, queryset)

    @admin.action(description="Resend the outcome notification", permissions=["change"])
    def resend_notification(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        if self.refuse_large(request, queryset):
            return
        count = maintenance.resend_notifications(maintenance.outcome_notifications(queryset))
        self.message_user(request, f"Queued {count} notification emails.", messages.SUCCESS)

    # Django's own delete action (with its confirmation page) and delete view
    # end in these two; they take the S3 objects along.

    def delete_model(self, request: HttpRequest, obj: Upload) -> None:
        obj.delete_with_objects(report=lambda failed: self._report_failed_deletes(request, failed))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        maintenance.delete_uploads(
            queryset, report=lambda failed: self._report_failed_deletes(request, failed)
        )

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """Django lists every related row it will delete; past a page, only say how many."""
        # A queryset from the delete action, a list of one from the delete page.
        count = objs.count() if isinstance(objs, QuerySet) else len(objs)
        if count <= SUMMARIZE_DELETES_OVER:
            return super().get_deleted_objects(objs, request)
        summary = [f"{count:,} uploads, with their thumbnails, notifications and S3 files"]
        # As Django does for the rows it lists: the cascade needs delete
        # permission on every registered model it reaches.
        perms_needed = {
            str(model._meta.verbose_name)
            for model in (Upload, Notification)
            if not self.admin_site.get_model_admin(model).has_delete_permission(request)
        }
        return summary, {"uploads": count}, perms_needed, []

    def _report_failed_deletes(self, request: HttpRequest, failed: list[str]) -> None:
        if failed:
            self.message_user(
                request,
                f"S3 could not delete {len(failed)} objects ({', '.join(failed[:5])}); "
                "cleanup_uploads will remove them as orphans.",
                messages.WARNING,
            )

    # --- summary ---

    def get_urls(self) -> list[URLPattern]:
        summary = path(
            "summary/",
            self.admin_site.admin_view(self.summary_view),
            name="uploads_upload_summary",
        )
        return [summary, *super().get_urls()]

    def summary_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        since = timezone.now() - timedelta(hours=24)
        counts = dict(Upload.objects.order_by().values_list("status").annotate(n=Count("pk")))
        changelist = reverse("admin:uploads_upload_changelist")
        recent = Upload.objects.filter(status__in=PROBLEMS, processed_at__gte=since)
        context = {
            **self.admin_site.each_context(request),
            "title": "Uploads summary",
            "opts": self.model._meta,
            "statuses": [
                (label, counts.get(value, 0), f"{changelist}?status__exact={value}")
                for value, label in Status.choices
            ],
            "total": sum(counts.values()),
            "reasons": recent.order_by()
            .values("status", "error")
            .annotate(n=Count("pk"))
            .order_by("-n", "status", "error")[:50],
            "latest": recent.select_related("owner").order_by("-processed_at")[:20],
            "queues": [queue_row(settings.S3_EVENTS_QUEUE), queue_row(settings.S3_EVENTS_DLQ)],
        }
        return TemplateResponse(request, "admin/uploads/upload/summary.html", context)


def queue_row(name: str) -> dict[str, Any]:
    """A queue's depth for the summary; the page still shows when SQS does not answer."""
    try:
        return {"name": name, **s3.queue_depth(name)}
    except Exception as error:
        logger.exception("could not read the depth of %s", name)
        return {"name": name, "error": str(error)}


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("message", "owner", "kind", "read", "created_at", "emailed_at")
    list_filter = ("kind", "read", ("emailed_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("upload__id", "owner__username", "owner__email")
    search_help_text = "Upload id, or the owner's username or email."
    list_select_related = ("owner",)
    show_full_result_count = False
    paginator = CappedCountPaginator
    sortable_by = ("created_at",)
    ordering = ("-created_at",)
    actions = ("resend",)
    fields = readonly_fields = (
        "upload",
        "owner",
        "kind",
        "message",
        "read",
        "created_at",
        "email_claimed_at",
        "emailed_at",
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Notification], search_term: str
    ) -> tuple[QuerySet[Notification], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        upload_id = parse_uuid(term)
        if upload_id is not None:
            return queryset.filter(upload_id=upload_id), False
        return queryset.filter(owned_by_matching(self, request, term)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    @admin.action(description="Resend the email", permissions=["change"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        if queryset.count() > MAX_ACTION_ROWS:
            self.message_user(
                request,
                f"That is more than {MAX_ACTION_ROWS:,} notifications, too many for one "
                "request: narrow the selection.",
                messages.ERROR,
            )
            return
        count = maintenance.resend_notifications(queryset)
        self.message_user(request, f"Queued {count} notification emails.", messages.SUCCESS)


@admin.register(UnconfirmedEmail)
class UnconfirmedEmailAdmin(admin.ModelAdmin):
    """Signed-up addresses not yet confirmed; deleting a row trusts the address."""

    list_display = ("user", "address", "created_at", "sent_at", "resends", "signup_address")
    search_fields = ("user__username", "user__email", "signup_address")
    list_select_related = ("user",)
    show_full_result_count = False
    ordering = ("-sent_at",)
    fields = readonly_fields = (
        "user",
        "address",
        "created_at",
        "sent_at",
        "resends",
        "signup_address",
    )

    @admin.display(description="email address", ordering="user__email")
    def address(self, obj: UnconfirmedEmail) -> str:
        return obj.user.email

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: UnconfirmedEmail | None = None
    ) -> bool:
        return obj is None and super().has_change_permission(request)
