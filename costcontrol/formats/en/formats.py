"""English dates as costcontrol writes them: "2026-12-04 14:05", whatever LANGUAGE_CODE's country.

Django takes a locale's formats before the settings' (Django's own en formats write "Dec. 4, 2026,
2:05 p.m."), so the settings' formats reach the screens only through this module, which
FORMAT_MODULE_PATH puts first. The values themselves live in costcontrol/settings/base.py; anything
not named here (input formats, separators) stays Django's English.
"""

from django.conf import settings

DATE_FORMAT = settings.DATE_FORMAT
DATETIME_FORMAT = settings.DATETIME_FORMAT
TIME_FORMAT = settings.TIME_FORMAT
SHORT_DATE_FORMAT = settings.SHORT_DATE_FORMAT
SHORT_DATETIME_FORMAT = settings.SHORT_DATETIME_FORMAT
FIRST_DAY_OF_WEEK = settings.FIRST_DAY_OF_WEEK
