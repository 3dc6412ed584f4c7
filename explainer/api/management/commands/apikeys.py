from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from explainer.api import keys
from explainer.api.models import ApiKey


class Command(BaseCommand):
    help = "Create, list and revoke API keys for /v1/ (keys are stored hashed; a new key is shown once)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        c = sub.add_parser("create", help="create a key and print it")
        c.add_argument("name")
        sub.add_parser("list", help="list keys (prefix, name, state)")
        r = sub.add_parser("revoke", help="revoke a key by its prefix or id")
        r.add_argument("key")
        sub.add_parser("dev", help="make sure the development key exists and print it")

    def handle(self, *args, action, **opts):
        if action == "create":
            _, key = keys.create(opts["name"])
            self.stdout.write(key)
        elif action == "list":
            for k in ApiKey.objects.order_by("created_at"):
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                used = f"last used {k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never used"
                self.stdout.write(f"{k.id:4}  {k.prefix}…  {k.name:20}  {state}, {used}")
        elif action == "revoke":
            q = ApiKey.objects.filter(id=int(opts["key"])) if opts["key"].isdigit() else ApiKey.objects.filter(prefix__startswith=opts["key"][:12])
            n = q.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
            if not n:
                raise CommandError("No active key matches.")
            self.stdout.write(f"revoked {n} key(s)")
        elif action == "dev":
            self.stdout.write(keys.development_key())
