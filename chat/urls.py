from django.urls import path

from . import views

urlpatterns = [
    path("media/voice/<int:voice_id>/", views.voice_reference, name="chat-voice-reference"),
    path("media/chunk/<int:chunk_id>/<str:what>/", views.chunk_media, name="chat-chunk-media"),
]
