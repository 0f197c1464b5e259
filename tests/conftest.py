import os

# Ultralytics must never reach the network in tests (no fonts, weights, datasets, update checks).
os.environ.setdefault("YOLO_OFFLINE", "1")
