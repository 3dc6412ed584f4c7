from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "explainer.api"
    label = "api"
