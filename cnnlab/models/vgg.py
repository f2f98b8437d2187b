"""Placeholder: filled in by the zoo work."""
