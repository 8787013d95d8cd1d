from django.urls import path

from . import views

urlpatterns = [
    path("", views.avatar_list, name="avatar-list"),
    path("new/", views.avatar_new, name="avatar-new"),
    path("<int:avatar_id>/", views.avatar_detail, name="avatar-detail"),
    path("<int:avatar_id>/proceed/", views.avatar_proceed_view, name="avatar-proceed"),
    path("<int:avatar_id>/train/", views.avatar_train_view, name="avatar-train"),
    path("<int:avatar_id>/evaluate/", views.avatar_evaluate_view, name="avatar-evaluate"),
    path("<int:avatar_id>/retry/", views.avatar_retry_view, name="avatar-retry"),
    path("<int:avatar_id>/cancel/", views.avatar_cancel_view, name="avatar-cancel"),
    path("<int:avatar_id>/delete/", views.avatar_delete_view, name="avatar-delete"),
    path("<int:avatar_id>/media/<str:what>/", views.avatar_media, name="avatar-media"),
]
