"""A minimal Django project calling fal.ai through falwrap (see docs/web.md)."""
