"""The memory of deploying a trained model: ``yolomem.deploy(...)`` (``estimate``) and its parts.

``graph`` (the export graph), ``fusion`` and ``liveness`` (what a runtime keeps and where), ``tensorrt``,
``onnxruntime``, ``torch_trace`` (predict and val traced), ``host`` (host RAM), ``export_rules`` (what the
installed Ultralytics does), ``terms`` (ranged figures), ``config`` (the keys), ``table`` (the table view).
"""
