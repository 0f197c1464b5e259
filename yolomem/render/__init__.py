"""Renderers: they format results and never compute them."""
