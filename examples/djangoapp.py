"""The tutorial's Django app, configured inside the module (no project tree).

    python forkserver.py examples.djangoapp:app
"""
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

if not settings.configured:   # a reload re-imports this module
    settings.configure(
        DEBUG=False,
        SECRET_KEY="forkserver-example-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )
    django.setup()


def hello(request):
    return HttpResponse("Hello world from Django!\n", content_type="text/plain")


urlpatterns = [path("hello", hello)]

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)

app = get_wsgi_application()
