from __future__ import annotations

import unicodedata
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm, UserCreationForm
from django.contrib.auth.models import User

from uploads import filetypes


def clean_display_filename(raw: str) -> str:
    """A filename safe to show: no directories, control characters or odd forms."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").split("/")[-1]
    name = " ".join(name.split())
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    return name


class StartUploadForm(forms.Form):
    filename = forms.CharField(max_length=1000, strip=False)
    content_type = forms.CharField(max_length=200)
    size = forms.IntegerField(min_value=1)

    def clean_filename(self) -> str:
        name = clean_display_filename(self.cleaned_data["filename"])
        if not name:
            raise forms.ValidationError("The file name is empty.", code="invalid_filename")
        if len(name) > 255:
            raise forms.ValidationError(
                "The file name is longer than 255 characters.", code="invalid_filename"
            )
        return name

    def clean_content_type(self) -> str:
        content_type = self.cleaned_data["content_type"].strip().lower()
        if content_type not in settings.UPLOAD_ALLOWED_TYPES or (
            content_type not in filetypes.KNOWN_TYPES
        ):
            allowed = ", ".join(filetypes.describe(t) for t in settings.UPLOAD_ALLOWED_TYPES)
            raise forms.ValidationError(
                f"Files of type {content_type or 'unknown'} are not accepted. Allowed: {allowed}.",
                code="type_not_allowed",
            )
        return content_type

    def clean_size(self) -> int:
        size: int = self.cleaned_data["size"]
        if size > settings.UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {size:,} bytes; the limit is {settings.UPLOAD_MAX_BYTES:,} bytes.",
                code="too_large",
            )
        return size


class SignUpForm(UserCreationForm):
    email = forms.EmailField(help_text="Where we tell you when your uploads are ready.")

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = ("username", "email")


class ConfirmedPasswordResetForm(PasswordResetForm):
    """Password resets go to confirmed addresses only.

    An address typed into the sign-up form is anyone's until its link is
    followed; resets must not become a way to mail it.
    """

    def get_users(self, email: str) -> Any:
        from uploads.models import UnconfirmedEmail

        return (
            user for user in super().get_users(email) if not UnconfirmedEmail.is_unconfirmed(user)
        )
