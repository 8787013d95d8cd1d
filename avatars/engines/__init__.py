"""Talking-head engines: how to drive each one and how to read its console (see shared/spec/engines.md)."""
