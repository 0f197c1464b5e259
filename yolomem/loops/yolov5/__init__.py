"""The yolov5 repo's train.py/val.py loop, for the original anchor-based designs (v3, v4, v5) and darknet .cfg files."""
