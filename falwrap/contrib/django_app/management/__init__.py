"""Management commands of falwrap's Django app."""
