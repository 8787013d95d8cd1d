from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.authentication import login_or_token_required
from avatars.uploads import upload_too_large_message
from core.errors import ServiceError
from core.http import delete_confirmation, form_errors, private_file, wants_json

from .forms import VideoCreateForm
from .selectors import videos_visible_to
from .services import video_create, video_delete


@login_required
def video_list(request):
    return render(request, "videos/video_list.html", {"videos": videos_visible_to(request.user)[:200]})


@login_required
def video_new(request):
    """The page's script sends the form with XMLHttpRequest to show upload progress, and gets JSON back;
    without script it is an ordinary form post."""
    # ?avatar=<id> preselects an avatar (a link from its page).
    initial = {"avatar": request.GET["avatar"]} if request.GET.get("avatar", "").isdigit() else {}
    form = VideoCreateForm(request.POST or None, request.FILES or None, user=request.user, initial=initial)
    if request.method == "POST":
        if getattr(request, "upload_too_large", False):
            form.add_error("audio", upload_too_large_message())
        elif form.is_valid():
            data = form.cleaned_data
            try:
                video = video_create(
                    owner=request.user, avatar=data["avatar"], audio=data["audio"], text=data["text"] or None,
                    voice=data["voice"], checkpoint=data["checkpoint"], batch_size=data["batch_size"],
                )  # fmt: skip
            except ServiceError as error:
                form.add_error(None, str(error))
            else:
                url = reverse("video-detail", args=[video.pk])
                if wants_json(request):
                    return JsonResponse({"redirect": url}, status=201)
                return redirect(url)
        if wants_json(request):
            return JsonResponse({"errors": form_errors(form)}, status=400)
    limits = {
        "max_bytes": settings.MAX_UPLOAD_BYTES,
        "min_seconds": settings.VIDEO_MIN_AUDIO_SECONDS,
        "max_minutes": settings.VIDEO_MAX_AUDIO_SECONDS / 60,
        "max_chars": settings.VIDEO_MAX_TEXT_CHARS,
    }
    return render(request, "videos/video_new.html", {"form": form, **limits})


@login_required
def video_detail(request, video_id: int):
    video = get_object_or_404(videos_visible_to(request.user), pk=video_id)
    return render(request, "videos/video_detail.html", {"video": video, "job": video.job})


@login_required
@require_POST
def video_delete_view(request, video_id: int):
    video = get_object_or_404(videos_visible_to(request.user), pk=video_id)
    if ask := delete_confirmation(
        request, title=f"Delete video #{video.pk}?", cancel_url=reverse("video-detail", args=[video.pk]),
        consequences="The video, its audio and its poster are deleted; if it is still being made, that "
        "stops.",
    ):  # fmt: skip
        return ask
    try:
        video_delete(video=video)
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("video-detail", video_id=video.pk)
    messages.success(request, "The video and its files were deleted.")
    return redirect("video-list")


MEDIA = {
    "video": ("result", "video/mp4"),
    "poster": ("poster", "image/jpeg"),
    "audio": ("audio", "audio/wav"),
}


@login_or_token_required
def video_media(request, video_id: int, what: str):
    """A video's files (the MP4, its poster, the driving audio), to its owner only."""
    video = get_object_or_404(videos_visible_to(request.user), pk=video_id)
    field, content_type = MEDIA.get(what, ("", ""))
    relative = getattr(video, field, "") if field else ""
    download = request.GET.get("download") == "1"
    name = f"video-{video.pk}{Path(relative).suffix}" if relative else None
    return private_file(request, relative, attachment=download, filename=name, content_type=content_type)
