import hashlib

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person using Talkforge. Staff users also manage GPU nodes and see every job."""


class ApiToken(models.Model):
    """A personal API token. Only its SHA-256 is stored: the key is shown once, when it is made."""

    PREFIX_LENGTH = 8

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    prefix = models.CharField(max_length=PREFIX_LENGTH, help_text="First characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


class Quota(models.Model):
    """One person's limits where they differ from the site's (settings QUOTA_*); empty = the site default.

    Staff set these in the admin. accounts/quotas.py reads them and measures usage."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    concurrent_jobs = models.PositiveIntegerField(null=True, blank=True, help_text="Jobs running at once.")
    queued_jobs = models.PositiveIntegerField(null=True, blank=True, help_text="Jobs waiting for a slot.")
    gpu_hours_per_month = models.FloatField(
        null=True, blank=True, help_text="GPU time per calendar month (UTC), in hours."
    )
    storage_gb = models.FloatField(null=True, blank=True, help_text="Uploads, datasets and results, in GB.")
    max_job_hours = models.FloatField(null=True, blank=True, help_text="The longest a single job may run.")

    def __str__(self) -> str:
        return f"Quota of {self.user}"


class InviteCode(models.Model):
    """A code that lets people sign up while SIGNUP_POLICY is "invite"."""

    code = models.CharField(max_length=64, unique=True)
    note = models.CharField(max_length=200, blank=True, help_text="Who it is for.")
    uses_left = models.PositiveIntegerField(default=1)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.code[:6]}… ({self.uses_left} left)"
