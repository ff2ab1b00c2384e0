"""Annotations in and out: Raven Pro selection tables."""
