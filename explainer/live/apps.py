from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "explainer.live"
    label = "live"
