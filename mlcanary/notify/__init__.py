"""Notifications of release events: the shared message, the event selection, Apprise, fan-out."""
