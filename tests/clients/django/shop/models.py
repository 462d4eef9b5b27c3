import uuid

from django.db import models


class Customer(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    name = models.CharField(max_length=100)
    prefs = models.JSONField(default=dict)
    active = models.BooleanField(default=True)
    joined = models.DateTimeField()
    balance = models.DecimalField(max_digits=12, decimal_places=2)


class Tag(models.Model):
    name = models.CharField(max_length=40, unique=True)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.DecimalField(max_digits=12, decimal_places=2)
    placed = models.DateTimeField()
    tags = models.ManyToManyField(Tag, blank=True)


class SavedFile(models.Model):
    """A user's upload: its path under MEDIA, and once moved to object storage, its key there."""

    path = models.CharField(max_length=255, unique=True)
    sha256 = models.CharField(max_length=64, blank=True)
    r2_key = models.CharField(max_length=255, blank=True)
    migrated_at = models.DateTimeField(null=True)
