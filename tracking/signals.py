"""Signals other apps listen to. Sent after the transaction that wrote the entries commits."""

from django.dispatch import Signal

# Sent with sender=CostEntry and `entries` (the new entries) once they are committed. The alerts
# app listens to evaluate budgets soon after a write, without the write waiting for it.
usage_recorded = Signal()
