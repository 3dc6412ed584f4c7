from django.urls import path

from explainer.stages import views

urlpatterns = [
    path("", views.overview, name="overview"),
]
