"""The shared kernel: money, database helpers, validation, the calendar of periods, CSV export and
Team. It imports no app of this project; every app may import it."""
