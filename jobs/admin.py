from django.contrib import admin, messages

from talkforge.errors import ServiceError

from .models import Job
from .selectors import job_log_text
from .services import job_cancel


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "owner", "status", "stage", "progress", "node", "gpu", "created_at")
    list_filter = ("status", "kind", "node")
    search_fields = ("id", "owner__username")
    list_select_related = ("owner", "node", "gpu__node")
    readonly_fields = [f.name for f in Job._meta.fields] + ["log"]
    actions = ["cancel"]

    def has_add_permission(self, request):
        return False  # jobs are submitted through the services, never typed in

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
