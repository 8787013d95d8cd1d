from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.api.views import MeView, TokenObtainView

api_patterns = [
    path("", include("jobs.api.urls")),
    path("", include("avatars.api.urls")),
    path("", include("videos.api.urls")),
    path("", include("chat.api.urls")),
    path("", include("gpu_nodes.api.urls")),
    path("token/", TokenObtainView.as_view(), name="token"),
    path("me/", MeView.as_view(), name="me"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", template_name="api_docs.html"),
        name="docs",
    ),
]

urlpatterns = [
    path("admin/django-rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    path("accounts/", include("accounts.urls")),
    path("nodes/", include("gpu_nodes.urls")),
    path("avatars/", include("avatars.urls")),
    path("videos/", include("videos.urls")),
    path("chat/", include("chat.urls")),
    path("", include("jobs.urls")),
]
