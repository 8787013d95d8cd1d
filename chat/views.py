from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404

from .selectors import chunks_visible_to, voices_visible_to


def _serve(relative: str, *, attachment: bool = False):
    """A private file to its owner (people's voices are never public URLs); the proxy sends the bytes in
    production (X-Accel-Redirect)."""
    if not relative:
        raise Http404("No such file.")
    if getattr(settings, "MEDIA_ACCEL_REDIRECT", False):
        response = HttpResponse()
        response["X-Accel-Redirect"] = f"/protected-media/{relative}"
        response["Content-Type"] = ""
        return response
    path = settings.MEDIA_ROOT / relative
    if not path.is_file():
        raise Http404("The file is missing on the server.")
    return FileResponse(open(path, "rb"), as_attachment=attachment)  # noqa: SIM115 - closed by Django


@login_required
def voice_reference(request, voice_id: int):
    voice = get_object_or_404(voices_visible_to(request.user), pk=voice_id)
    return _serve(voice.reference)


@login_required
def chunk_media(request, chunk_id: int, what: str):
    chunk = get_object_or_404(chunks_visible_to(request.user), pk=chunk_id)
    if what not in {"audio", "video"}:
        raise Http404("No such file.")
    return _serve(getattr(chunk, what))
