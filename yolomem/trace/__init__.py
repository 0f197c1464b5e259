"""Recording a step's allocations: the tracer, its fake-dispatch cache, and CUDA's autocast policy emulated on CPU."""
