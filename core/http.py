"""HTTP pieces every app's views share: private media to their owner, and the form pages that scripts
post to (they want JSON back)."""

import re
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import render

from core import media


def wants_json(request) -> bool:
    """The page's script sent the form (XMLHttpRequest, for an upload progress bar) and reads JSON back."""
    return request.headers.get("x-requested-with") == "XMLHttpRequest"


def form_errors(form) -> dict[str, list[str]]:
    return {field: [str(error) for error in errors] for field, errors in form.errors.items()}


def private_file(
    request,
    relative: str,
    *,
    attachment: bool = False,
    filename: str | None = None,
    content_type: str | None = None,
) -> HttpResponse:
    """A media file (relative to the media store), for a view that has already checked the requester owns
    it (people's faces and voices are never public URLs). A remote store (S3) gets a redirect to a signed
    link that works for MEDIA_URL_EXPIRY seconds. From the local disk, in production the proxy sends the
    bytes (X-Accel-Redirect to an internal location); otherwise it streams from here, answering one byte
    range (players seek with them, and Safari plays no MP4 without)."""
    if not relative:
        raise Http404("No such file.")
    if not media.is_local():
        return media.signed_redirect(
            relative, attachment=attachment, filename=filename, content_type=content_type
        )
    if getattr(settings, "MEDIA_ACCEL_REDIRECT", False):
        response = HttpResponse()
        response["X-Accel-Redirect"] = f"/protected-media/{relative}"
        response["Content-Type"] = ""
        return response
    path = Path(media.storage().path(relative))
    if not path.is_file():
        raise Http404("The file is missing on the server.")
    size = path.stat().st_size
    if (wanted := _byte_range(request.headers.get("Range", ""), size)) is not None:
        return _partial(path, wanted, size, content_type)
    handle = open(path, "rb")  # noqa: SIM115 - closed by Django with the response
    kwargs = {"content_type": content_type} if content_type else {}
    response = FileResponse(handle, as_attachment=attachment, filename=filename or path.name, **kwargs)
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


def _partial(path: Path, wanted: tuple[int, int], size: int, content_type: str | None) -> HttpResponse:
    first, last = wanted
    if first >= size or first > last:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    handle = open(path, "rb")  # noqa: SIM115 - closed by Django with the response
    handle.seek(first)
    kwargs = {"content_type": content_type} if content_type else {}
    response = FileResponse(_Slice(handle, last - first + 1), status=206, filename=path.name, **kwargs)
    response["Content-Length"] = str(last - first + 1)
    response["Content-Range"] = f"bytes {first}-{last}/{size}"
    response["Accept-Ranges"] = "bytes"
    return response


CONFIRMED = "confirmed"  # the field a delete form sends once the person has confirmed


def delete_confirmation(request, *, title: str, consequences: str, cancel_url: str) -> HttpResponse | None:
    """None when the delete form says the person confirmed; else the page that asks them.

    With script the button's own dialog asks and adds ``confirmed=yes`` (static/js/confirm.js); without
    it, the post arrives unconfirmed and this page asks, with a form that confirms, and a way back."""
    if request.POST.get(CONFIRMED) == "yes":
        return None
    context = {"title": title, "consequences": consequences, "cancel_url": cancel_url, "action": request.path}
    return render(request, "confirm_delete.html", context)
