from django.contrib import admin
from django.urls import path

from djangosite import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("form/", views.form),
    path("upload/", views.upload),
    path("file/", views.file),
    path("environ/", views.environ),
]
