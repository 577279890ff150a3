"""A Django project in one module: settings, URLs and views, timed by the Zibrato middleware.

Under a server: ``DJANGO_SETTINGS_MODULE=support.webapps.django_app`` and
``support.webapps.django_app:application``; the middleware makes its client
from ``$ZIBRATO_PORT`` (no ``ZIBRATO_CLIENT`` setting). In the test process,
:func:`configure` sets the same settings with a given client.
"""

from __future__ import annotations

import os

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

CHUNKS = 3

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
MIDDLEWARE = ["zibrato.integrations.django.ZibratoMiddleware"]
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None  # the 500s of the raising view are expected: keep the test output quiet


def user(request, user_id: int) -> HttpResponse:
    response = HttpResponse(f"user {user_id}")
    response["X-Worker-Pid"] = str(os.getpid())  # the server tests see workers recycled
    return response


def stream(request) -> StreamingHttpResponse:
    return StreamingHttpResponse(f"chunk {i}\n" for i in range(CHUNKS))


def boom(request) -> HttpResponse:
    raise ValueError("the raising route")


urlpatterns = [
    path("users/<int:user_id>/", user),
    path("stream/", stream),
    path("boom/", boom),
]


def configure(client) -> None:
    """Settings for the test process (once per process), with ``client`` as ZIBRATO_CLIENT."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY=SECRET_KEY,
            DEBUG=DEBUG,
            ALLOWED_HOSTS=ALLOWED_HOSTS,
            ROOT_URLCONF=ROOT_URLCONF,
            MIDDLEWARE=MIDDLEWARE,
            INSTALLED_APPS=INSTALLED_APPS,
            DATABASES=DATABASES,
            USE_TZ=USE_TZ,
            LOGGING_CONFIG=LOGGING_CONFIG,
            ZIBRATO_CLIENT=client,
        )
        django.setup()
    else:
        settings.ZIBRATO_CLIENT = client


def __getattr__(name: str):
    if name == "application":  # the WSGI application, made when a server asks for it
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    raise AttributeError(name)
