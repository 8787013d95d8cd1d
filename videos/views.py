import re
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from avatars.uploads import upload_too_large_message
from talkforge.errors import ServiceError

from .forms import VideoCreateForm
from .selectors import videos_visible_to
from .services import video_create, video_delete


@login_required
def video_list(request):
    return render(request, "videos/video_list.html", {"videos": videos_visible_to(request.user)[:200]})


def _wants_json(request) -> bool:
    return request.headers.get("x-requested-with") == "XMLHttpRequest"


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
                if _wants_json(request):
                    return JsonResponse({"redirect": url}, status=201)
                return redirect(url)
        if _wants_json(request):
            errors = {field: [str(e) for e in errs] for field, errs in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
    return render(request, "videos/video_new.html", {"form": form, "max_bytes": settings.MAX_UPLOAD_BYTES})


@login_required
def video_detail(request, video_id: int):
    video = get_object_or_404(videos_visible_to(request.user), pk=video_id)
    return render(request, "videos/video_detail.html", {"video": video, "job": video.job})


@login_required
@require_POST
def video_delete_view(request, video_id: int):
    video = get_object_or_404(videos_visible_to(request.user), pk=video_id)
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


@login_required
def video_media(request, video_id: int, what: str):
    """A video's files (the MP4, its poster, the driving audio), to its owner only.

    In production the proxy sends the bytes (X-Accel-Redirect to an internal location)."""
    video = get_object_or_404(videos_visible_to(request.user), pk=video_id)
    field, content_type = MEDIA.get(what, ("", ""))
    relative = getattr(video, field, "") if field else ""
    if not relative:
        raise Http404("No such file.")
    if getattr(settings, "MEDIA_ACCEL_REDIRECT", False):
        response = HttpResponse()
        response["X-Accel-Redirect"] = f"/protected-media/{relative}"
        response["Content-Type"] = ""
        return response
    path = Path(settings.MEDIA_ROOT) / relative
    if not path.is_file():
        raise Http404("The file is missing on the server.")
    download = request.GET.get("download") == "1"
    name = f"video-{video.pk}{path.suffix}"
    size = path.stat().st_size
    if (wanted := _byte_range(request.headers.get("Range", ""), size)) is not None:
        return _partial(path, wanted, size, content_type)
    handle = open(path, "rb")  # noqa: SIM115 - closed by Django with the response
    response = FileResponse(handle, as_attachment=download, filename=name, content_type=content_type)
    response["Accept-Ranges"] = "bytes"
    return response


RANGE = re.compile(r"^bytes=(?P<first>\d*)-(?P<last>\d*)$")


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range (what video players ask for when seeking), clipped to the file; None for
    none, or for what this view does not serve partially (several ranges), which then gets the whole."""
    match = RANGE.match(header.strip())
    if match is None or not (match["first"] or match["last"]):
        return None
    if match["first"]:
        first = int(match["first"])
        last = min(int(match["last"]), size - 1) if match["last"] else size - 1
    else:  # the last N bytes
        first, last = max(0, size - int(match["last"])), size - 1
    return first, last


class _Slice:
    """``length`` bytes of an open file, read in blocks: a range streams like the whole file does."""

    def __init__(self, handle, length: int):
        self.handle, self.left = handle, length

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.handle.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


def _partial(path: Path, wanted: tuple[int, int], size: int, content_type: str) -> HttpResponse:
    first, last = wanted
    if first >= size or first > last:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    handle = open(path, "rb")  # noqa: SIM115 - closed by Django with the response
    handle.seek(first)
    response = FileResponse(_Slice(handle, last - first + 1), status=206, content_type=content_type)
    response["Content-Length"] = str(last - first + 1)
    response["Content-Range"] = f"bytes {first}-{last}/{size}"
    response["Accept-Ranges"] = "bytes"
    return response
