from rest_framework.routers import DefaultRouter

from .views import ConversationViewSet, VoiceViewSet

router = DefaultRouter()
router.register("voices", VoiceViewSet, basename="voice")
router.register("conversations", ConversationViewSet, basename="conversation")
urlpatterns = router.urls
