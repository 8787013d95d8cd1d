from django.urls import path

from . import views

urlpatterns = [
    path("", views.conversation_list, name="chat-list"),
    path("new/", views.conversation_new, name="chat-new"),
    path("<int:conversation_id>/", views.conversation_detail, name="chat-conversation"),
    path("<int:conversation_id>/delete/", views.conversation_delete_view, name="chat-delete"),
    path("voices/", views.voice_list, name="chat-voices"),
    path("voices/<int:voice_id>/delete/", views.voice_delete_view, name="chat-voice-delete"),
    path("media/voice/<int:voice_id>/", views.voice_reference, name="chat-voice-reference"),
    path("media/chunk/<int:chunk_id>/<str:what>/", views.chunk_media, name="chat-chunk-media"),
]
