"""The original anchor-based YOLO designs (YOLOv3/v4 darknet cfgs, YOLOv5 v7.0 YAMLs) and the yolov5
repo's training loop that trained them (also ultralytics/yolov3 v9.x). Selected with ``framework=yolov5``.

- ``modules``: the layers (Conv, C3, SPPF, Detect, Segment...) and ``LayerModel``, the routed layer
  list both the YAML and the darknet builders produce.
- ``loss``: the anchor-based loss with its target building.
- ``step``: one training iteration of yolov5's train.py, under a ``Tracer``.
- ``runner``: builds a model under the tracer and records its iterations.
- ``names``: which names mean an original design.
"""
