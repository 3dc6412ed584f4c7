from django.urls import path

from explainer.live.consumers import StreamConsumer
from explainer.rooms.consumers import RoomConsumer

websocket_urlpatterns = [
    path("ws/stream/", StreamConsumer.as_asgi()),
    path("ws/rooms/<str:code>/", RoomConsumer.as_asgi()),
]
