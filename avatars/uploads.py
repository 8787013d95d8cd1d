"""Uploads go to disk as they arrive (never whole into memory) and stop at the configured size; the
helpers every upload service shares (avatars, voices, videos, chat turns)."""

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.db import IntegrityError
from django.utils.text import slugify

from core import media
from core.errors import ServiceError


class SizeLimitedUploadHandler(FileUploadHandler):
    """Stops reading a file past MAX_UPLOAD_BYTES and marks the request, so the view can say so.

    It passes every chunk on to the next handler (TemporaryFileUploadHandler writes them to disk)."""

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received = start + len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.request.upload_too_large = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size):
        return None


def upload_too_large_message() -> str:
    limit = settings.MAX_UPLOAD_BYTES
    return f"The file is larger than the limit of {limit / 2**20:.0f} MiB: trim or compress it and try again."


def upload_on_disk(upload: UploadedFile, folder: Path) -> Path:
    """The upload as a file on disk (TemporaryFileUploadHandler already put it there; a small in-memory
    one is written into ``folder``)."""
    if hasattr(upload, "temporary_file_path"):
        return Path(upload.temporary_file_path())
    path = folder / "upload.bin"
    with open(path, "wb") as target:
        for chunk in upload.chunks():
            target.write(chunk)
    return path


@dataclass(frozen=True)
class Incoming:
    """An upload being stored: ``source``, the upload on this machine's disk (None when there is none);
    ``target``, where its checked, converted file is written; ``scratch``, a folder for anything else."""

    source: Path | None
    target: Path
    scratch: Path


@contextmanager
def storing(upload: UploadedFile | None, relative: str) -> Iterator[Incoming]:
    """Check and convert an upload into the media file ``relative``: the block reads ``source`` and writes
    ``target``, which is stored once the block ends without an error (nothing is stored otherwise)."""
    with tempfile.TemporaryDirectory() as scratch, media.writing(relative) as target:
        source = upload_on_disk(upload, Path(scratch)) if upload is not None else None
        yield Incoming(source=source, target=target, scratch=Path(scratch))


@contextmanager
def rollback(*folders: str, taken: str | None = None) -> Iterator[list[str]]:
    """Everything the block stored under ``folders`` of the media store goes again when it fails, so a
    failed upload leaves nothing behind (a folder chosen inside the block is appended to the list it
    yields). ``taken``: the message an IntegrityError becomes (a unique name taken meanwhile)."""
    written = list(folders)
    try:
        yield written
    except IntegrityError:
        for folder in written:
            media.delete(folder)
        if taken is None:
            raise
        raise ServiceError(taken) from None
    except BaseException:
        for folder in written:
            media.delete(folder)
        raise


def unique_slug(name: str, fallback: str) -> str:
    """A path-safe, unguessable folder name from a display name: ``anna-3f9a1c``."""
    base = slugify(name)[:40].strip("-") or fallback
    return f"{base}-{secrets.token_hex(3)}"
