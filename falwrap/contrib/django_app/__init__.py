"""The Django app of falwrap: system checks and the ``falwrap_stats`` command.

Add ``"falwrap.contrib.django_app"`` to ``INSTALLED_APPS``; the API lives in
:mod:`falwrap.contrib.django`.
"""
