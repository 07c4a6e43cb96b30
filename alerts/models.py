"""Alerts: rules, incidents, channels and the notification outbox. Built in the alerts issue."""
