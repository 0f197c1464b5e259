"""What an estimate returns: the ``Estimate``, the whole-epoch simulation, host memory, the timeline."""
