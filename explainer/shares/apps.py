from django.apps import AppConfig


class SharesConfig(AppConfig):
    name = "explainer.shares"
    label = "shares"
