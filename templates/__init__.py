"""Jinja2 templates for every generated page, shipped inside the wheel as ``reportgen.templates``."""
