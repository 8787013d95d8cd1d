from rest_framework.routers import DefaultRouter

from .views import GpuViewSet, NodeViewSet

router = DefaultRouter()
router.register("nodes", NodeViewSet, basename="node")
router.register("gpus", GpuViewSet, basename="gpu")
urlpatterns = router.urls
