from django.apps import AppConfig


class TutorialConfig(AppConfig):
    name = "explainer.tutorial"
    label = "tutorial"
