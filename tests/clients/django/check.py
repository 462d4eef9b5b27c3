"""Run the app's own ORM reads and writes on a database and print what they return, as JSON: the
same script on the original SQLite database and on ferry's copy must print the same thing.
The writes (a new customer, tag and order) show that the copy's sequences are past the data."""

import datetime
import decimal
import json
import os
import sys

import django

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.db.models import Count, Max, Sum  # noqa: E402

from shop.models import Customer, Order, SavedFile, Tag  # noqa: E402


def plain(v):
    if isinstance(v, (decimal.Decimal, datetime.datetime)):
        return str(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


first = Customer.objects.order_by("id").first()
july = datetime.datetime(2024, 7, 1, tzinfo=datetime.timezone.utc)
checks = {
    "counts": [Customer.objects.count(), Order.objects.count(), Tag.objects.count(), Order.tags.through.objects.count()],
    "dark theme": Customer.objects.filter(prefs__theme="dark").count(),
    "level above 6": Customer.objects.filter(prefs__level__gt=6).count(),
    "in beta": Customer.objects.filter(prefs__has_key="beta").count(),
    "beta note": Customer.objects.filter(prefs__beta__note="naïve ✓").count(),
    "by uuid": Customer.objects.get(uid=first.uid).name,
    "uuid type": type(first.uid).__name__,
    "first prefs": first.prefs,
    "inactive": Customer.objects.filter(active=False).count(),
    "active type": type(first.active).__name__,
    "joined": first.joined,
    "joined is aware": first.joined.tzinfo is not None,
    "joined before july 2024": Customer.objects.filter(joined__lt=july).count(),
    "orders in 2024": Order.objects.filter(placed__year=2024).count(),
    "last order": Order.objects.aggregate(Max("placed"))["placed__max"],
    "sum of totals": Order.objects.aggregate(Sum("total"))["total__sum"].quantize(decimal.Decimal("0.01")),
    "totals above 500000": Order.objects.filter(total__gt=decimal.Decimal("500000")).count(),
    "five largest": list(Order.objects.order_by("-total", "id").values_list("id", "total")[:5]),
    "richest": list(Customer.objects.order_by("-balance", "id").values_list("name", "balance")[:3]),
    "busiest": list(Customer.objects.annotate(n=Count("orders")).order_by("-n", "id").values_list("name", "n")[:3]),
    "tagged red": Order.objects.filter(tags__name="red").count(),
    "tagged ünïcode": Order.objects.filter(tags__name="ünïcode").count(),
    "files": list(SavedFile.objects.order_by("path").values_list("path", "sha256")),
}

# Writes, as the app makes them after the move: each new id must follow the copied ones.
c = Customer.objects.create(name="after the move", prefs={"new": True}, joined=july, balance=decimal.Decimal("0.10"))
t = Tag.objects.create(name="after")
o = Order.objects.create(customer=c, total=decimal.Decimal("1.00"), placed=july)
o.tags.add(t, Tag.objects.get(name="red"))
checks["new ids"] = [c.id, t.id, o.id, max(Order.tags.through.objects.filter(order=o).values_list("id", flat=True))]
checks["new order's tags"] = sorted(o.tags.values_list("name", flat=True))

json.dump(plain(checks), sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
print()
