"""Make sure the development admin account exists and print how to sign in. Used by ``scripts/run.sh``.

The password is generated once and kept in ``<var>/admin_password`` (mode 600); the account is made
when there is no user named ``admin``. When the file is new but the account already exists (the file
was deleted), the account takes the new password, so what is printed always works.
"""

import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

USERNAME = "admin"


def read_or_create_password(path: Path) -> tuple[str, bool]:
    if path.exists() and path.read_text().strip():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password, True


def main(password_file: str) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    path = Path(password_file)
    password, new_password = read_or_create_password(path)
    user_model = get_user_model()
    user = user_model.objects.filter(username=USERNAME).first()
    if user is None:
        user_model.objects.create_superuser(USERNAME, email="", password=password)
        print(f"Created the admin account {USERNAME!r}.")
    elif new_password:
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
        print(f"Gave the admin account {USERNAME!r} the new password in {path}.")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: dev_admin.py PASSWORD_FILE")
    main(sys.argv[1])
