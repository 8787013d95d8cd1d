from django.contrib import admin, messages
from django.utils.html import format_html

from core.errors import ServiceError

from .kinds import kind_label
from .models import Job
from .selectors import job_log_text, job_subject
from .services import job_cancel


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id", "kind_name", "owner", "status", "stage", "percent", "node", "gpu", "created_at", "took"
    )  # fmt: skip
    list_filter = ("status", "kind", "node")
    search_fields = ("id", "owner__username")
    list_select_related = ("owner", "node", "gpu__node")
    readonly_fields = ["works_on", "percent", "took"] + [f.name for f in Job._meta.fields] + ["log"]
    actions = ["cancel"]

    def has_add_permission(self, request):
        return False  # jobs are submitted through the services, never typed in

    @admin.display(description="Kind", ordering="kind")
    def kind_name(self, job):
        return kind_label(job.kind)

    @admin.display(description="Progress", ordering="progress")
    def percent(self, job):
        return f"{job.progress * 100:.0f} %"

    @admin.display(description="Duration")
    def took(self, job):
        return job.duration_text or "—"

    @admin.display(description="Works on")
    def works_on(self, job):
        subject = job_subject(job)
        return format_html('<a href="{}">{}</a>', subject[1], subject[0]) if subject else "—"

    @admin.display(description="Log")
    def log(self, job):
        return job_log_text(job)[-20000:]

    @admin.action(description="Cancel")
    def cancel(self, request, queryset):
        for job in queryset:
            try:
                job_cancel(job=job)
            except ServiceError as error:
                self.message_user(request, str(error), messages.WARNING)
