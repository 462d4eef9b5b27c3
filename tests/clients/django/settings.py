"""A small Django project for ferry's real-client tests: a shop on SQLite, moved by ferry to
PostgreSQL, its ORM then run on the copy. The database comes from the environment:
FERRY_DJANGO_DB is `sqlite:PATH` or a `postgres://USER:PASSWORD@HOST:PORT/DB` URL."""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "ferry-client-tests-not-a-secret"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(address):
    if address.startswith("sqlite:"):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": address[len("sqlite:"):]}
    url = urlsplit(address)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.path.lstrip("/"),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname,
        "PORT": url.port,
    }


DATABASES = {"default": _database(os.environ["FERRY_DJANGO_DB"])}

STORAGES = {
    "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("FERRY_DJANGO_BUCKET", "media"),
            "endpoint_url": os.environ.get("AWS_ENDPOINT_URL"),
            "region_name": "auto",
            "signature_version": "s3v4",
            "addressing_style": "path",
            "querystring_auth": False,
        },
    },
}
