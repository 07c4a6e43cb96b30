"""The admin's own date and number formats (settings.FORMAT_MODULE_PATH), one way everywhere."""
