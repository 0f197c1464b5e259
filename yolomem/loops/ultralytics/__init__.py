"""Ultralytics' own trainer step (``yolo train``), traced from the installed release."""
