"""Headless training: never imported by the Slicer module."""
