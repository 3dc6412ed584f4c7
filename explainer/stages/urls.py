from django.urls import path

from explainer.stages import model_pages, views

urlpatterns = [
    path("", views.home, name="home"),
    path("learn/<str:slug>/", views.stage, name="stage"),
    path("learn/<str:slug>/data", views.stage_data, name="stage-data"),
    path("models/", model_pages.models_index, name="models"),
    path("models/<str:name>/", model_pages.model_card, name="model_card"),
    path("scenario/encode", views.encode_scenario, name="encode-scenario"),
    path("scenario/count", views.count_prompt, name="count-prompt"),
]
