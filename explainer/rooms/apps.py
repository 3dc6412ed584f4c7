from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "explainer.rooms"
    label = "rooms"
