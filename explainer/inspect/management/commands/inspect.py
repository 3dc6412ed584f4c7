"""``manage.py inspect new``: start an inspector session and print its base URL (the last line), for scripts."""
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from explainer.inspect.models import Session

DEFAULT_ADDRESS = "http://127.0.0.1:8000"  # where `manage.py runserver` listens; EXPLAINER_PUBLIC_URL says otherwise


class Command(BaseCommand):
    help = "Inspector sessions: `new` starts one and prints its base URL (point ANTHROPIC_BASE_URL at it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["new"])

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["action"] != "new":
            raise CommandError("Only `new` is known.")
        session = Session.objects.create()
        url = f"{settings.EXPLAINER_PUBLIC_URL or DEFAULT_ADDRESS}/inspect/{session.id}"
        self.stdout.write(f"Inspector session, kept until {session.expires_at:%Y-%m-%d %H:%M} UTC. Its page: {url}/")
        self.stdout.write("Point a client at it:  export ANTHROPIC_BASE_URL=" + url)
        self.stdout.write(url)
