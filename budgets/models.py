"""Budgets: what may be spent (scopes, periods, thresholds). Built in the budgets issue."""
