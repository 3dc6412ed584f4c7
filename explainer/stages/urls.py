from django.urls import path

from explainer.stages import views

urlpatterns = [
    path("", views.home, name="home"),
    path("learn/<str:slug>/", views.stage, name="stage"),
    path("learn/<str:slug>/data", views.stage_data, name="stage-data"),
    path("scenario/encode", views.encode_scenario, name="encode-scenario"),
]
