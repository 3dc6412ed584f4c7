from django.apps import AppConfig


class StagesConfig(AppConfig):
    name = "explainer.stages"
    label = "stages"
