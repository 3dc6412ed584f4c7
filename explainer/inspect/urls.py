from django.urls import path, re_path

from explainer.inspect import views

urlpatterns = [
    path("inspect/", views.index, name="inspect"),
    path("inspect/new", views.new, name="inspect-new"),
    path("inspect/<str:session_id>/", views.session_page, name="inspect-session"),
    path("inspect/<str:session_id>/data", views.data, name="inspect-data"),
    path("inspect/<str:session_id>/call/<str:n>/", views.call_page, name="inspect-call"),
    path("inspect/<str:session_id>/call/<str:n>/data", views.call_data, name="inspect-call-data"),
    path("inspect/<str:session_id>/delete", views.delete, name="inspect-delete"),
    path("inspect/<str:session_id>/import", views.import_calls, name="inspect-import"),
    path("inspect/<str:session_id>/v1/messages", views.messages),
    path("inspect/<str:session_id>/v1/messages/count_tokens", views.count_tokens),
    path("inspect/<str:session_id>/v1/models", views.models),
    re_path(r"^inspect/(?P<session_id>[^/]+)/v1/(?P<rest>.*)$", views.not_found),
]
