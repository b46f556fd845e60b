"""`manage.py ensure_admin`: the admin superuser, created once with a generated password."""

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin superuser once, with a generated password kept in a file."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password-file", type=Path, required=True)

    def handle(self, *args, **options):
        User = get_user_model()
        path: Path = options["password_file"]
        if User.objects.filter(username=options["username"]).exists() and path.exists():
            return
        password = path.read_text().strip() if path.exists() else secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(username=options["username"], defaults={"email": "admin@localhost"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"admin user {user.username!r} ready; password in {path}"))
