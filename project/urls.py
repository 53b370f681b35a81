from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("uploads.urls")),
]

handler400 = "uploads.views.api_bad_request"
handler404 = "uploads.views.api_not_found"
handler500 = "uploads.views.api_server_error"
