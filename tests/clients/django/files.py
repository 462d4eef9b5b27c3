"""The app's side of a files migration, through its own storage (django-storages over boto3, on
the S3 server the test runs): point each SavedFile at its object from ferry's upload results (the
README's recipe), then open every file by the key the app now holds and compare its bytes with
the checksum the app recorded before the move. Prints a JSON summary."""

import hashlib
import json
import os
import sys

import django

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.core.files.storage import default_storage  # noqa: E402
from django.db import connection  # noqa: E402

from shop.models import SavedFile  # noqa: E402

with connection.cursor() as cur:
    cur.execute(
        """UPDATE shop_savedfile s SET
             r2_key = CASE WHEN u.stored THEN u.key ELSE s.r2_key END,
             migrated_at = CASE WHEN u.stored THEN u.migrated_at ELSE s.migrated_at END
           FROM (SELECT *, status IN ('uploaded', 'present', 'overwritten') AS stored FROM ferry_uploads) u
           WHERE u.path = s.path"""
    )
    updated = cur.rowcount

read, wrong, missing = 0, [], []
for f in SavedFile.objects.order_by("path"):
    if not f.r2_key or not default_storage.exists(f.r2_key):
        missing.append(f.path)
        continue
    with default_storage.open(f.r2_key, "rb") as obj:
        data = obj.read()
    read += 1
    if hashlib.sha256(data).hexdigest() != f.sha256 or default_storage.size(f.r2_key) != len(data):
        wrong.append(f.path)
print(json.dumps({"updated": updated, "files": SavedFile.objects.count(), "read": read, "wrong": wrong, "missing": missing,
                  "migrated_at_set": SavedFile.objects.filter(migrated_at__isnull=False).count()}))
