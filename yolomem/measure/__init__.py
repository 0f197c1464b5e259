"""Measuring on a real GPU, and validation: comparing estimates with what was measured."""
