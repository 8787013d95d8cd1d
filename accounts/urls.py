from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", views.profile, name="profile"),
    path("profile/token/rotate/", views.token_rotate, name="token-rotate"),
    path("profile/token/revoke/", views.token_revoke, name="token-revoke"),
    path("profile/delete/", views.account_delete_view, name="account-delete"),
]
