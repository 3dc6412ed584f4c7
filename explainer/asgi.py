"""ASGI entry point: Django for HTTP, Channels for WebSockets, both served by Daphne."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")
django_asgi_app = get_asgi_application()  # build Django before importing anything that touches models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from csp.utils import build_policy  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.http import Http404  # noqa: E402

from explainer.inspect.proxy import asgi_app as with_inspector_proxy  # noqa: E402
from explainer.routing import websocket_urlpatterns  # noqa: E402


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's static files, with what its middleware would add: none of it runs here.

    A path that Django refuses (``/static/../x``: SuspiciousFileOperation; a NUL byte: ValueError;
    a name the file system cannot take: OSError) is a 404 like any missing file, not a 500, and
    every answer, file or 404 page, says nosniff and carries the site's Content-Security-Policy.
    """

    def serve(self, request):
        try:
            return super().serve(request)
        except (SuspiciousOperation, ValueError, OSError) as exc:
            raise Http404("No such static file.") from exc

    async def get_response_async(self, request):
        response = await super().get_response_async(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", build_policy())
        return response


application = ProtocolTypeRouter({
    # One process serves its own static files so the README's single command is enough;
    # a multi-process deployment lets the proxy serve them instead.
    "http": with_inspector_proxy(StaticFilesHandler(django_asgi_app)),  # /inspect/<id>/v1/: relayed ahead of Django
    "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
})

# Load the model now, not on the first request, then move everything alive at start-up (Django,
# the tokenizer's tables, the weights' wrappers) out of the garbage collector's way. Otherwise
# each full collection walks those objects again, and in a classroom room that was a pause of
# about 100 ms for every student every few seconds.
import gc  # noqa: E402

from explainer.web import services  # noqa: E402
from explainer.web.runner import stop_with_the_server  # noqa: E402

services.start()  # the engine, the catalog, the lanes: built once from the settings, the model loaded
# SIGTERM stops the engine's work first, then Daphne, and the process exits within seconds whatever
# its workers are doing (explainer/web/runner.py).
stop_with_the_server()
# Imported now, not on the event loop (a second of work there): jsonschema, which the validator imports
# lazily on the first request with tools, comes with the demo tools and the schema compiler.
import explainer.lifecycle.demo_tools  # noqa: E402,F401
import explainer.llm.constrained  # noqa: E402,F401

gc.freeze()
