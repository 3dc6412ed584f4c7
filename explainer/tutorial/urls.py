from django.urls import path

from explainer.tutorial import views

urlpatterns = [
    path("tutorial/", views.lesson_path, name="tutorial"),
    path("tutorial/lessons.json", views.lessons_json, name="tutorial-lessons"),
    path("tutorial/start/<str:lesson_id>", views.start, name="tutorial-start"),
    path("tutorial/check/<str:lesson_id>", views.check, name="tutorial-check"),
]
