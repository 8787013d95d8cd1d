from django import forms
from django.contrib import admin, messages

from core.errors import ServiceError

from .connections import NodeError
from .engine_catalog import real_engines
from .models import Gpu, Node, NodeCleanup, NodeEngine
from .services import (
    engine_install_problem,
    node_confirm_host_key,
    node_drain,
    node_probe,
    node_resume,
    node_set_enabled,
    ssh_credentials_sealed,
)


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


class NodeEngineFormSet(forms.BaseInlineFormSet):
    """The same checks as the API's (services.engine_install_problem), against the node being saved."""

    def clean(self):
        super().clean()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("engine"):
                continue
            fields = {key: data.get(key) or "" for key in ("image", "install_dir", "environment")}
            if problem := engine_install_problem(self.instance, data["engine"], **fields):
                form.add_error(None, problem)


class NodeEngineInline(admin.TabularInline):
    """The engines the node can run: an image per engine (docker) or its folder and environment (bare).
    Placement sends an engine's jobs only to nodes listed here; the self-test's last result shows."""

    model = NodeEngine
    formset = NodeEngineFormSet
    extra = 0
    fields = ("engine", "image", "install_dir", "environment", "selftest_result", "selftest_at")
    readonly_fields = ("selftest_result", "selftest_at")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "engine":
            choices = [(name, engine.label) for name, engine in real_engines().items()]
            return forms.ChoiceField(choices=choices, help_text=db_field.help_text)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Self-test")
    def selftest_result(self, row):
        return selftest_summary(row)


def selftest_summary(row: NodeEngine) -> str:
    """One line for the node's page: never run, passed, or which checks failed."""
    if row.selftest_passed is None:
        return "not run: manage.py node_selftest or the button above"
    failed = [check["name"] for check in row.selftest.get("checks", []) if not check.get("ok")]
    return "passed" if not failed else "failed: " + ", ".join(failed)


class NodeAdminForm(forms.ModelForm):
    """Credentials are write-only: typed or uploaded here, stored encrypted, never shown again.

    A new SSH node (or one whose address changed) gets its host key fetched while the form is checked;
    the fingerprint then shows on the page and a staff user confirms it by pasting the fingerprint they
    checked on the server (``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``)."""

    password = forms.CharField(required=False, widget=forms.PasswordInput, help_text="Leave empty to keep.")
    private_key = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        strip=False,
        help_text="Paste a private key (OpenSSH or PEM), or upload it below.",
    )
    private_key_file = forms.FileField(required=False, label="Private key file")
    key_passphrase = forms.CharField(required=False, widget=forms.PasswordInput)
    confirm_fingerprint = forms.CharField(
        required=False,
        help_text="Paste the SHA256 fingerprint you checked on the server to trust its host key.",
    )

    class Meta:
        model = Node
        fields = ["name", "kind", "host", "port", "username", "jump", "workdir", "runtime", "docker_image",
                  "environment", "enabled"]  # fmt: skip

    def clean(self):
        from .ssh import host_key_fetch, load_private_key

        data = super().clean()
        upload = data.get("private_key_file")
        if upload:
            if upload.size > 64 * 1024:
                raise forms.ValidationError("That file is too large to be an SSH private key.")
            data["private_key"] = upload.read().decode("utf-8", "replace")
        if data.get("kind") != Node.Kind.SSH:
            return data
        if not data.get("host") or not data.get("username"):
            raise forms.ValidationError("An SSH node needs a host and a user name.")
        has_stored = self.instance.pk and self.instance.has_credentials
        if not (data.get("password") or data.get("private_key") or has_stored):
            raise forms.ValidationError("Give a password or a private key for the SSH login.")
        if data.get("private_key"):
            try:
                load_private_key(data["private_key"], data.get("key_passphrase", ""))
            except NodeError as error:
                raise forms.ValidationError(str(error)) from None
        moved = not self.instance.pk or any(
            data.get(field) != getattr(self.instance, field) for field in ("host", "port", "jump")
        )
        if moved:
            try:
                self.fetched_host_key = host_key_fetch(
                    host=data["host"], port=data["port"], via=data.get("jump")
                )
            except NodeError as error:
                raise forms.ValidationError(str(error)) from None
        return data


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    form = NodeAdminForm
    list_display = ("name", "kind", "runtime", "status", "enabled", "host_key_ok", "last_seen_at")
    list_filter = ("kind", "runtime", "status", "enabled")
    search_fields = ("name", "host")
    readonly_fields = ("status", "last_seen_at", "last_error", "facts", "host_key_fingerprint",
                       "host_key_confirmed_at", "created_at")  # fmt: skip
    inlines = [NodeEngineInline, GpuInline]
    actions = ["probe_now", "selftest_engines", "drain", "resume", "enable", "disable"]
    change_form_template = "admin/gpu_nodes/node/change_form.html"  # adds the self-test button

    def get_urls(self):
        from django.urls import path

        own = [path("<int:node_id>/selftest/", self.admin_site.admin_view(self.selftest_view),
                    name="gpu_nodes_node_selftest")]  # fmt: skip
        return own + super().get_urls()

    def selftest_view(self, request, node_id):
        from django.http import HttpResponseNotAllowed
        from django.shortcuts import get_object_or_404, redirect

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        node = get_object_or_404(Node, pk=node_id)
        if not self.has_change_permission(request, node):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        self._queue_selftests(request, [node])
        return redirect("admin:gpu_nodes_node_change", node.pk)

    def _queue_selftests(self, request, nodes):
        from core.queues import queue_named

        for node in nodes:
            names = list(node.engines.values_list("engine", flat=True))
            if not names:
                self.message_user(
                    request, f"{node.name} lists no engines: add them below first.", messages.WARNING
                )
                continue
            for name in names:
                # A worker serving the node's queue runs it (a local node can only be tested on its machine,
                # and an image's first start may take minutes): the result shows in the engines table.
                queue_named(node.queue_name).enqueue(
                    "avatars.engines.selftest.selftest_task", node.pk, name, job_timeout=900
                )
            self.message_user(
                request,
                f"{node.name}: self-test of {', '.join(names)} queued; reload this page in a minute for the "
                "results.",
                messages.SUCCESS,
            )

    @admin.action(description="Self-test engines (runtime, GPU, extensions, weights, ffmpeg, disk)")
    def selftest_engines(self, request, queryset):
        self._queue_selftests(request, queryset)

    @admin.display(boolean=True, description="Host key confirmed")
    def host_key_ok(self, node):
        return node.host_key_pinned if node.kind == Node.Kind.SSH else None

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fetched = getattr(form, "fetched_host_key", None)
        if fetched:
            obj.host_key_type, obj.host_key, obj.host_key_fingerprint = fetched
            obj.host_key_confirmed_at = None
            notice = (
                f"{obj.name}: the server presents host key {fetched[2]}. Check it on the server, then "
                "paste it into 'Confirm fingerprint' to trust it."
            )
            self.message_user(request, notice, messages.WARNING)
        if data.get("private_key") or data.get("password"):  # the form checked the key (``clean``)
            sealed = ssh_credentials_sealed(
                password=data.get("password", ""),
                private_key=data.get("private_key", ""),
                key_passphrase=data.get("key_passphrase", ""),
            )
            for field, value in sealed.items():
                setattr(obj, field, value)
        super().save_model(request, obj, form, change)
        if data.get("confirm_fingerprint"):
            try:
                node_confirm_host_key(node=obj, fingerprint=data["confirm_fingerprint"])
            except ServiceError as error:
                self.message_user(request, str(error), messages.ERROR)
        elif obj.kind == Node.Kind.LOCAL or obj.host_key_pinned:
            node_probe(node=obj)

    @admin.action(description="Probe now (reachability, runtime and GPUs)")
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

    @admin.action(description="Resume (end draining)")
    def resume(self, request, queryset):
        for node in queryset:
            node_resume(node=node)

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        for node in queryset:
            node_set_enabled(node=node, enabled=True)

    @admin.action(description="Disable")
    def disable(self, request, queryset):
        for node in queryset:
            node_set_enabled(node=node, enabled=False)


@admin.register(NodeCleanup)
class NodeCleanupAdmin(admin.ModelAdmin):
    """Folders of deleted data still waiting on their node (offline, or rm failed: see the last error).
    Made by deletions only; a probe that finds the node online removes them (gpu_nodes/cleanup.py)."""

    list_display = ("node", "path", "reason", "created_at", "attempts", "last_tried_at", "last_error")
    list_filter = ("node",)
    readonly_fields = ("node", "path", "reason", "created_at", "attempts", "last_tried_at", "last_error")

    def has_add_permission(self, request):
        return False
