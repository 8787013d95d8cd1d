"""Admin deletions go through the apps' own delete services, never the ORM's bare cascade: deleting an
avatar, voice, video, conversation or account in the admin removes its files here and on the nodes, keeps
jobs as history, and refuses what the service refuses (active jobs), exactly as the portal does."""

from __future__ import annotations

from django.contrib import messages

from core.errors import ServiceError


class ServiceDeleteMixin:
    """Set ``delete_service`` to a callable taking the object; a refusal is shown as an error message."""

    delete_service = None

    def get_deleted_objects(self, objs, request):
        """What the confirmation page lists: the objects themselves. Their dependants are the service's
        business (it keeps jobs as history and refuses what may not go), not the ORM cascade's."""
        objs = list(objs)
        return [str(obj) for obj in objs], {self.model._meta.verbose_name_plural: len(objs)}, set(), []

    def delete_model(self, request, obj):
        try:
            type(self).delete_service(obj)
        except ServiceError as error:
            self.message_user(request, f"{obj} was not deleted: {error}", messages.ERROR)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)
