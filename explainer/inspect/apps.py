from django.apps import AppConfig


class InspectConfig(AppConfig):
    name = "explainer.inspect"
    label = "inspector"
    verbose_name = "Inspector of a developer's own Claude calls"
