"""``manage.py falwrap_stats``."""
