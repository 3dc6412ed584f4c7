from django.urls import path

from explainer.inspect.live import SessionConsumer
from explainer.live.consumers import StreamConsumer
from explainer.rooms.consumers import RoomConsumer

websocket_urlpatterns = [
    path("ws/stream/", StreamConsumer.as_asgi()),
    path("ws/rooms/<str:code>/", RoomConsumer.as_asgi()),
    path("ws/inspect/<str:session_id>/", SessionConsumer.as_asgi()),  # a session's page, told of each call recorded
]
