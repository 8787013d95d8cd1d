"""``manage.py backup FOLDER``: the database and every media file, into a new folder."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.backup import BackupError, backup


class Command(BaseCommand):
    help = "Back up the database (pg_dump, or the SQLite file) and all media into a new, empty folder."

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)

    def handle(self, *args, folder, **options):
        try:
            manifest = backup(folder)
        except BackupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"backed up the {manifest['vendor']} database and {manifest['media_files']} media files "
            f"to {folder}"
        )
