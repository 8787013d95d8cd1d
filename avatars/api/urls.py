from rest_framework.routers import DefaultRouter

from .views import AvatarViewSet

router = DefaultRouter()
router.register("avatars", AvatarViewSet, basename="avatar")
urlpatterns = router.urls
