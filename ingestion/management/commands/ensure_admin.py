"""`manage.py ensure_admin`: the superuser `admin`, made once; `--banner URL`: the sign-in box.

`make run` runs it twice: before start-up, to make the user (a generated password is kept in
FRESHET_VAR_DIR/admin_password, readable by its owner only), and as a process of the Procfile
that waits until the web server and a worker answer and then prints where to sign in, with the
generated password, in a box that comes after the workers' start-up lines instead of above them.
The file goes once the password no longer signs in (changed in the admin)."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"


def password_file() -> Path:
    return Path(settings.VAR_DIR) / "admin_password"


def banner_lines(*, url: str, password: str | None) -> list[str]:
    lines = ["Freshet is up.", "", f"Sign in:    {url}/admin/", f"  user:     {USERNAME}"]
    if password:
        lines += [f"  password: {password}", "", f"(generated; kept in {password_file()} until you change it)"]
    else:
        lines += ["  password: the one you set (FRESHET_ADMIN_PASSWORD, or changed since)"]
    lines += ["", f"Dashboard:  {url}/dashboard/", f"Chat:       {url}/chat/", f"API:        {url}/api/docs/",
              "Ctrl-C stops it."]
    return lines


def boxed(lines: list[str]) -> str:
    width = max(len(line) for line in lines)
    return "\n".join(["╔" + "═" * (width + 2) + "╗", *[f"║ {line.ljust(width)} ║" for line in lines],
                      "╚" + "═" * (width + 2) + "╝"])


class Command(BaseCommand):
    help = ("Create the superuser `admin` if missing (password from FRESHET_ADMIN_PASSWORD, or generated); "
            "with --banner URL, wait for the server at URL and print where to sign in.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--banner", metavar="URL", help="Wait until URL/api/health/ answers, then print the box.")
        parser.add_argument("--timeout", type=float, default=300.0, help="Seconds to wait for the server (--banner).")
        parser.add_argument("--exit", action="store_true",
                            help="Exit after the box (without it the command stays, as a Procfile process must).")

    def handle(self, *args, **options) -> None:
        if options["banner"]:
            self.banner(options["banner"].rstrip("/"), timeout=options["timeout"], stay=not options["exit"])
            return
        User = get_user_model()
        if User.objects.filter(username=USERNAME).exists():
            self.stdout.write(f"Superuser {USERNAME} exists.")
            return
        given = os.environ.get("FRESHET_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        User.objects.create_superuser(USERNAME, "admin@localhost", password)
        if given:
            self.stdout.write(self.style.SUCCESS(
                f"Created superuser {USERNAME} (password from FRESHET_ADMIN_PASSWORD)."))
            return
        path = password_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
        self.stdout.write(self.style.SUCCESS(
            f"Created superuser {USERNAME} with a generated password: it is shown in a box once Freshet is up "
            f"(and kept in {path} until you change it)."))

    def generated_password(self) -> str | None:
        """The generated password while it still signs `admin` in; else None (and the file goes)."""
        path = password_file()
        try:
            password = path.read_text().strip()
        except FileNotFoundError:
            return None
        user = get_user_model().objects.filter(username=USERNAME).first()
        if user is not None and user.check_password(password):
            return password
        path.unlink(missing_ok=True)
        return None

    def banner(self, url: str, *, timeout: float, stay: bool) -> None:
        deadline = time.monotonic() + timeout
        ready = False
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{url}/api/health/", timeout=2)
                ready = response.status_code == 200  # 503 while no worker answers yet
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(1)
        lines = banner_lines(url=url, password=self.generated_password())
        if not ready:
            lines.insert(1, f"(not every part answered {url}/api/health/ within {timeout:.0f} s: look there)")
        time.sleep(0.5 if ready else 0)  # let the worker finish its ready line first
        self.stdout.write("\n" + boxed(lines) + "\n")
        self.stdout.flush()
        if stay:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while True:
                signal.pause()
