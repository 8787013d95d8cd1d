from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from .models import User


class SignUpForm(UserCreationForm):
    invite_code = forms.CharField(required=False, max_length=64, help_text="The code you were sent.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if settings.SIGNUP_POLICY != "invite":
            del self.fields["invite_code"]
