"""People's media files (uploads, results, speech) through Django's storage API, so that the web tier and
workers on other machines share them through one store: the local disk (FileSystemStorage at MEDIA_ROOT,
``make run`` and the tests) or an S3-compatible bucket (S3, MinIO, R2; ``MEDIA_STORAGE=s3``).

A media file is named by its path relative to the store (``avatars/anna-3f9a1c/anna-3f9a1c.mp4``), as the
models record it. Processing (ffmpeg, probes, engines) needs files on a local disk: :func:`local_path`
gives one to read, :func:`writing` one to write that is stored when the block ends. With the local store
both are the stored file itself, so nothing is copied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages
from django.http import Http404, HttpResponse, HttpResponseRedirect


def storage():
    return storages["default"]


def is_local() -> bool:
    """The store is this machine's disk (every process sees the files under MEDIA_ROOT)."""
    return isinstance(storage(), FileSystemStorage)


def _checked(relative: str) -> str:
    """``relative`` when it names something inside the store at least one folder down (``avatars/<slug>``,
    never ``avatars`` or the whole store); ValueError otherwise."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        raise ValueError(f"{relative!r} is not a media path inside the store")
    return path.as_posix()


@contextmanager
def local_path(item: Path | str) -> Iterator[Path]:
    """The file on this machine's disk: a Path is already local; a str names a stored media file, which
    is the file itself in the local store, or a temporary download (removed after the block) from a
    remote one. A missing file gives a path that does not exist, as a missing local file would."""
    if isinstance(item, Path):
        yield item
        return
    store = storage()
    if is_local():
        yield Path(store.path(item))
        return
    with tempfile.TemporaryDirectory(prefix="talkforge-media-") as scratch:
        path = Path(scratch) / PurePosixPath(item).name
        if store.exists(item):
            with store.open(item, "rb") as source, open(path, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        yield path


@contextmanager
def writing(relative: str) -> Iterator[Path]:
    """A local path to write the media file ``relative`` to; it is stored when the block ends without an
    error. In the local store it is the file's own place (its folder made)."""
    if is_local():
        path = Path(storage().path(relative))
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="talkforge-media-") as scratch:
        path = Path(scratch) / PurePosixPath(relative).name
        yield path
        save_file(path, relative)


@contextmanager
def workspace(relative: str) -> Iterator[Path]:
    """A local folder whose files are then stored under ``relative`` with :func:`save_file` (a reply's
    chunks, written one by one): the media folder itself in the local store, a temporary one otherwise."""
    if is_local():
        folder = Path(storage().path(relative))
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="talkforge-media-") as scratch:
        yield Path(scratch)


def save_file(path: Path, relative: str) -> None:
    """Store the local file ``path`` as ``relative``, replacing what was there. Nothing to do when it is
    the stored file already (the local store's :func:`writing` and :func:`workspace`)."""
    store = storage()
    if is_local():
        target = Path(store.path(relative))
        if target == path or (target.exists() and target.samefile(path)):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        # Atomic on arrival: a reader never sees half a file under the final name.
        partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_native_id()}.part")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
        return
    with open(path, "rb") as handle:
        stored = store.save(relative, File(handle, name=path.name))
    if stored != relative:  # a store that renames instead of replacing (S3's file_overwrite=False)
        raise RuntimeError(f"The media store saved {relative} as {stored}: set it to overwrite files.")


def cached_copy(relative: str) -> Path:
    """A lasting local copy of the media file ``relative``, for what a worker reads again and again (a
    voice's reference recording, with the XTTS latents cached beside it): the file itself in the local
    store, else a copy in MEDIA_CACHE_ROOT downloaded on first use. A missing file gives a path that does
    not exist."""
    if is_local():
        return Path(storage().path(relative))
    path = Path(settings.MEDIA_CACHE_ROOT) / _checked(relative)
    if not path.is_file() and storage().exists(relative):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.part")
        with storage().open(relative, "rb") as source, open(partial, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        os.replace(partial, path)
    return path


def exists(relative: str) -> bool:
    return bool(relative) and storage().exists(relative)


def _objects(relative: str) -> Iterator[tuple[str, int]]:
    """(name, bytes) of the file ``relative`` or of every file under the folder ``relative``."""
    store = storage()
    if is_local():
        path = Path(store.path(relative))
        if path.is_file():
            yield relative, path.stat().st_size
        elif path.is_dir():
            for root, _dirs, files in os.walk(path):
                for name in files:
                    try:
                        size = os.lstat(os.path.join(root, name)).st_size
                    except OSError:
                        continue  # removed while we counted
                    yield Path(root, name).relative_to(store.location).as_posix(), size
        return
    if hasattr(store, "bucket"):  # S3: one listing call per 1,000 objects instead of one per file
        location = store.location.strip("/")
        key = f"{location}/{relative}" if location else relative
        for obj in store.bucket.objects.filter(Prefix=key):
            if obj.key == key or obj.key.startswith(f"{key}/"):
                yield obj.key[len(location) + 1 :] if location else obj.key, obj.size
        return
    try:
        folders, files = store.listdir(relative)
    except (FileNotFoundError, NotADirectoryError):
        folders, files = [], []
    if not folders and not files and store.exists(relative):
        yield relative, store.size(relative)
    for name in files:
        yield f"{relative}/{name}", store.size(f"{relative}/{name}")
    for folder in folders:
        yield from _objects(f"{relative}/{folder}")


def size(relative: str) -> int:
    """Bytes the file or folder ``relative`` takes in the store (0 when absent)."""
    return sum(n for _name, n in _objects(relative)) if relative else 0


def delete(relative: str) -> tuple[int, int]:
    """Remove the file or folder ``relative`` (``avatars/<slug>``: at least one folder down, else
    ValueError); returns the files and bytes removed. Absent is fine."""
    relative = _checked(relative)
    store = storage()
    if is_local():
        root = Path(store.location).resolve()
        path = Path(store.path(relative))
        if root not in path.resolve().parents:  # a symlink pointing out of the store
            raise ValueError(f"{relative!r} lies outside MEDIA_ROOT")
        found = list(_objects(relative))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        return len(found), sum(n for _name, n in found)
    # This machine's cached copies go too (other machines' caches hold only what their workers read).
    shutil.rmtree(Path(settings.MEDIA_CACHE_ROOT) / relative, ignore_errors=True)
    (Path(settings.MEDIA_CACHE_ROOT) / relative).unlink(missing_ok=True)
    found = list(_objects(relative))
    if hasattr(store, "bucket"):
        location = store.location.strip("/")
        keys = [f"{location}/{name}" if location else name for name, _n in found]
        for first in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
            store.bucket.delete_objects(
                Delete={"Objects": [{"Key": key} for key in keys[first : first + 1000]], "Quiet": True}
            )
    else:
        for name, _n in found:
            store.delete(name)
    return len(found), sum(n for _name, n in found)


def signed_redirect(
    relative: str, *, attachment: bool = False, filename: str | None = None, content_type: str | None = None
) -> HttpResponse:
    """For a view that has already checked the requester owns the file: a redirect to a link that lets
    the browser fetch it from the remote store for MEDIA_URL_EXPIRY seconds (S3 query-string auth)."""
    store = storage()
    if not store.exists(relative):
        raise Http404("The file is missing on the server.")
    parameters = {}
    if content_type:
        parameters["ResponseContentType"] = content_type
    if attachment:
        name = (filename or PurePosixPath(relative).name).replace('"', "")
        parameters["ResponseContentDisposition"] = f'attachment; filename="{name}"'
    url = store.url(relative, parameters=parameters or None, expire=settings.MEDIA_URL_EXPIRY)
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "private, no-store"  # the link expires; the next play asks again
    return response
