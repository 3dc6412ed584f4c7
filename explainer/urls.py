from django.urls import include, path

urlpatterns = [
    path("", include("explainer.api.urls")),
    path("", include("explainer.stages.urls")),
    path("", include("explainer.shares.urls")),
    path("", include("explainer.rooms.urls")),
    path("", include("explainer.tutorial.urls")),
    path("", include("explainer.inspect.urls")),
]

handler400 = "explainer.stages.views.bad_request"
handler404 = "explainer.stages.views.not_found"
handler500 = "explainer.stages.views.server_error"
