"""costcontrol: what AI APIs and GPUs cost, held against budgets."""

from .celery import app as celery_app

__all__ = ("celery_app",)
