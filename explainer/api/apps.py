from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "explainer.api"
    label = "api"

    def ready(self) -> None:
        from django.conf import settings

        from explainer.api.ratelimits import build_store

        self.store = build_store(settings)  # built once, from the settings, when the app starts
