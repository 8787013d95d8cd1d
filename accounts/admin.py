from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from core.admin import ServiceDeleteMixin

from .deletion import account_delete
from .models import ApiToken, InviteCode, Quota, User
from .quotas import usage_rows


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name_plural = "Limits (empty = the site's default)"


@admin.register(User)
class UserAdmin(ServiceDeleteMixin, BaseUserAdmin):
    # The person's files here and on the nodes go too (accounts/deletion.py); superusers are refused there.
    delete_service = staticmethod(lambda user: account_delete(user=user, confirm_username=user.username))
    inlines = [QuotaInline]
    list_display = ("username", "email", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser")
    readonly_fields = ("usage",)
    fieldsets = (*BaseUserAdmin.fieldsets, ("Usage", {"fields": ("usage",)}))
    actions = ["approve"]

    @admin.display(description="Usage against limits")
    def usage(self, user):
        if user.pk is None:
            return "—"
        return "; ".join(f"{row['what']}: {row['used'] or '—'} of {row['limit']}" for row in usage_rows(user))

    @admin.action(description="Approve (activate) the selected accounts")
    def approve(self, request, queryset):
        count = queryset.filter(is_active=False).update(is_active=True)
        self.message_user(request, f"{count} account(s) activated.", messages.SUCCESS)


@admin.register(InviteCode)
class InviteCodeAdmin(admin.ModelAdmin):
    list_display = ("code", "note", "uses_left", "expires_at", "created_by", "created_at")
    readonly_fields = ("created_by", "created_at")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "prefix", "created_at", "last_used_at")
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # tokens are made by their owner on the profile page, where the key is shown once
