from django.urls import path

from . import views

urlpatterns = [
    path("", views.video_list, name="video-list"),
    path("new/", views.video_new, name="video-new"),
    path("<int:video_id>/", views.video_detail, name="video-detail"),
    path("<int:video_id>/delete/", views.video_delete_view, name="video-delete"),
    path("<int:video_id>/media/<str:what>/", views.video_media, name="video-media"),
]
