"""ASGI entry point: Django for HTTP, Channels for WebSockets, both served by Daphne."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")
django_asgi_app = get_asgi_application()  # build Django before importing anything that touches models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from explainer.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    # One process serves its own static files so the README's single command is enough;
    # a multi-process deployment lets the proxy serve them instead.
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
})

# Load the model now, not on the first request, then move everything alive at start-up (Django,
# the tokenizer's tables, the weights' wrappers) out of the garbage collector's way. Otherwise
# each full collection walks those objects again, and in a classroom room that was a pause of
# about 100 ms for every student every few seconds.
import gc  # noqa: E402

from explainer.live.runner import get_engine  # noqa: E402

get_engine()
gc.freeze()
