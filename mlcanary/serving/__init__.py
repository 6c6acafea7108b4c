"""Serving backends: where model versions run and how traffic is split between them."""
