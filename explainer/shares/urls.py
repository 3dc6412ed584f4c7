from django.urls import path

from explainer.shares import views

urlpatterns = [
    path("traces/", views.trace_list, name="trace-list"),
    path("traces/<str:trace_id>/", views.trace_detail, name="trace"),
    path("traces/<str:trace_id>/delete", views.trace_delete, name="trace-delete"),
]
