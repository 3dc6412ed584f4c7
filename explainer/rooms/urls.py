from django.urls import path

from explainer.rooms import views

urlpatterns = [
    path("rooms/", views.landing, name="rooms"),
    path("rooms/new", views.create, name="room-create"),
    path("rooms/<str:code>/present", views.present, name="room-present"),
    path("join", views.join, name="room-join"),
    path("r/<str:code>/", views.student, name="room-student"),
]
