from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ServiceError

from .deletion import account_delete
from .forms import SignUpForm
from .quotas import usage_rows
from .services import api_token_revoke, api_token_rotate, user_sign_up


def signup(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    policy = settings.SIGNUP_POLICY
    if policy == "closed":
        return render(request, "accounts/signup.html", {"policy": policy}, status=403)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = user_sign_up(form=form, invite_code=form.cleaned_data.get("invite_code", ""))
        except ServiceError as error:
            form.add_error("invite_code" if policy == "invite" else None, str(error))
        else:
            if not user.is_active:
                return render(request, "accounts/signup_waiting.html", {"username": user.username})
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome to Talkforge, {user.username}.")
            return redirect("dashboard")
    return render(request, "accounts/signup.html", {"form": form, "policy": policy})


@login_required
def profile(request):
    token = getattr(request.user, "api_token", None)
    new_key = request.session.pop("new_api_key", None)
    return render(
        request,
        "accounts/profile.html",
        {"token": token, "new_key": new_key, "usage": usage_rows(request.user)},
    )


@login_required
@require_POST
def token_rotate(request):
    # The key is shown once on the next page load (the session carries it there), never again.
    request.session["new_api_key"] = api_token_rotate(user=request.user)
    messages.success(request, "New API token made. Copy it now: it will not be shown again.")
    return redirect("profile")


@login_required
@require_POST
def token_revoke(request):
    api_token_revoke(user=request.user)
    messages.success(request, "API token revoked.")
    return redirect("profile")


@login_required
@require_POST
def account_delete_view(request):
    try:
        account_delete(user=request.user, confirm_username=request.POST.get("username", ""))
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("profile")
    logout(request)
    messages.success(request, "Your account and all of its data were deleted.")
    return redirect("login")
