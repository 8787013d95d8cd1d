from django.contrib import admin, messages

from .models import Gpu, Node
from .services import node_drain, node_probe, node_set_enabled


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    can_delete = False
    readonly_fields = (
        "index",
        "name",
        "memory_total_mb",
        "memory_used_mb",
        "utilization_pct",
        "present",
        "updated_at",
    )

    def has_add_permission(self, request, obj=None):
        return False  # slots come from probing the node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "runtime", "status", "enabled", "last_seen_at")
    list_filter = ("kind", "runtime", "status", "enabled")
    search_fields = ("name", "host")
    readonly_fields = ("status", "last_seen_at", "last_error", "created_at")
    inlines = [GpuInline]
    actions = ["probe_now", "drain", "enable", "disable"]

    @admin.action(description="Probe now (reachability and GPUs)")
    def probe_now(self, request, queryset):
        for node in queryset:
            node = node_probe(node=node)
            level = messages.SUCCESS if node.status != Node.Status.OFFLINE else messages.ERROR
            detail = node.last_error or ", ".join(g.label for g in node.gpus.filter(present=True))
            self.message_user(request, f"{node.name}: {node.status} — {detail}", level)

    @admin.action(description="Drain (finish running jobs, take no new ones)")
    def drain(self, request, queryset):
        for node in queryset:
            node_drain(node=node)

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        for node in queryset:
            node_set_enabled(node=node, enabled=True)

    @admin.action(description="Disable")
    def disable(self, request, queryset):
        for node in queryset:
            node_set_enabled(node=node, enabled=False)
