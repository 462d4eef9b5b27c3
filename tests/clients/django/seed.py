"""Fill the shop with a deterministic sample through the ORM, as the app itself would:
customers with JSON preferences, UUIDs, flags, money and times to the microsecond; orders with
tags (a many-to-many table); and one SavedFile per file under MEDIA (argv[1]), if given."""

import datetime
import decimal
import hashlib
import os
import random
import sys
import uuid

import django

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from shop.models import Customer, Order, SavedFile, Tag  # noqa: E402

rng = random.Random(23)
utc = datetime.timezone.utc
start = datetime.datetime(2023, 1, 1, tzinfo=utc)

tags = [Tag.objects.create(name=name) for name in ["red", "green", "blue", "gift", "bulk", "rush", "ünïcode"]]
customers = []
for i in range(300):
    prefs = {"theme": rng.choice(["dark", "light"]), "level": rng.randint(0, 9), "langs": ["en", "fr"][: rng.randint(0, 2)]}
    if i % 7 == 0:
        prefs["beta"] = {"since": "2024-05-01", "note": "naïve ✓"}
    customers.append(
        Customer.objects.create(
            uid=uuid.UUID(int=rng.getrandbits(128), version=4),
            name=f"customer {i}",
            prefs=prefs,
            active=i % 5 != 0,
            joined=start + datetime.timedelta(seconds=rng.randint(0, 60_000_000), microseconds=rng.randint(0, 999_999)),
            balance=decimal.Decimal(rng.randint(-50_000_00, 9_999_999_999_99)) / 100,
        )
    )
for i in range(2000):
    order = Order.objects.create(
        customer=rng.choice(customers),
        total=decimal.Decimal(rng.randint(1, 99_999_999)) / 100,
        placed=start + datetime.timedelta(seconds=rng.randint(0, 60_000_000), microseconds=rng.randint(0, 999_999)),
    )
    order.tags.set(rng.sample(tags, rng.randint(0, 3)))

if len(sys.argv) > 1:
    media = sys.argv[1]
    for root, _, files in os.walk(media):
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, media)
            with open(full, "rb") as f:
                SavedFile.objects.create(path=rel, sha256=hashlib.sha256(f.read()).hexdigest())
print(f"seeded {Customer.objects.count()} customers, {Order.objects.count()} orders, {SavedFile.objects.count()} files")
