"""``manage.py restore FOLDER``: a backup made by ``manage.py backup``, into this deployment."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.backup import BackupError, restore


class Command(BaseCommand):
    help = (
        "Restore a backup into this deployment's database (new and empty, unless --replace) and media "
        "storage; then run manage.py migrate if this code is newer than the backup."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument(
            "--replace", action="store_true", help="replace a database that already holds a deployment"
        )

    def handle(self, *args, folder, replace, **options):
        try:
            manifest = restore(folder, replace=replace)
        except BackupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"restored the database made at {manifest['made_at']} and {manifest['restored_media_files']} "
            "media files"
        )
