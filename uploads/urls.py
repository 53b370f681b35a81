from django.urls import path

from uploads import views

urlpatterns = [
    path("", views.upload_page, name="upload_page"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/confirm-email/resend", views.resend_confirmation, name="resend_confirmation"),
    path("accounts/confirm-email/<str:token>/", views.confirm_email, name="confirm_email"),
    path("api/uploads/", views.uploads_collection, name="api_uploads"),
    path("api/uploads/<uuid:upload_id>/", views.upload_detail, name="api_upload"),
    path(
        "api/uploads/<uuid:upload_id>/complete", views.complete_upload, name="api_upload_complete"
    ),
    path("api/notifications/", views.notifications_collection, name="api_notifications"),
    path("api/notifications/read", views.notifications_read, name="api_notifications_read"),
    path("healthz", views.healthz, name="healthz"),
]
