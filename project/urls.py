from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from uploads.forms import ConfirmedPasswordResetForm

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before Django's own, which it replaces: resets reach confirmed addresses only.
    path(
        "accounts/password_reset/",
        auth_views.PasswordResetView.as_view(form_class=ConfirmedPasswordResetForm),
        name="password_reset",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("uploads.urls")),
]

handler400 = "uploads.views.api_bad_request"
handler404 = "uploads.views.api_not_found"
handler500 = "uploads.views.api_server_error"
