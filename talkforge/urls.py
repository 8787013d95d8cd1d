from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.api.views import MeView, TokenObtainView
from avatars.views import home

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


class FaviconView(RedirectView):
    """Browsers ask for /favicon.ico whatever the page says: send them to the icon in static/ (resolved
    per request, so a collected, hashed name is found; not permanent, as that name changes)."""

    def get_redirect_url(self, *args, **kwargs) -> str:
        return static("img/favicon.svg")


urlpatterns = [
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("admin/django-rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    path("accounts/", include("accounts.urls")),
    path("nodes/", include("gpu_nodes.urls")),
    path("avatars/", include("avatars.urls")),
    path("videos/", include("videos.urls")),
    path("chat/", include("chat.urls")),
    path("", home, name="dashboard"),
    path("", include("jobs.urls")),
]
