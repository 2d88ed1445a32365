import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser `admin` if missing (password from FRESHET_ADMIN_PASSWORD, or generated)."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("Superuser admin exists.")
            return
        password = os.environ.get("FRESHET_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "admin@localhost", password)
        if os.environ.get("FRESHET_ADMIN_PASSWORD"):
            self.stdout.write(self.style.SUCCESS("Created superuser admin (password from FRESHET_ADMIN_PASSWORD)."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Created superuser admin with password: {password}"))
