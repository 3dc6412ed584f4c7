from django.urls import path, re_path

from explainer.api import views

urlpatterns = [
    path("v1/messages", views.messages),
    path("v1/messages/count_tokens", views.count_tokens),
    path("v1/models", views.models),
    path("v1/models/<str:model_id>", views.model_detail),
    re_path(r"^v1/(?P<rest>.*)$", views.not_found),
]
