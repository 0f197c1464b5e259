"""Issue 11: fields that nothing fills or reads are gone (``Trace.unaccounted``, ``StepSettings.overrides``,
``StepSettings.iterations``); what a run leaves out is listed once, in ``Estimate.unaccounted``."""

from __future__ import annotations

from dataclasses import fields

from yolomem.loops.ultralytics.step import StepSettings
from yolomem.trace.tracer import Trace


def test_trace_has_no_unaccounted_list():
    assert "unaccounted" not in {f.name for f in fields(Trace)}


def test_step_settings_hold_only_what_the_step_reads():
    names = {f.name for f in fields(StepSettings)}
    assert not names & {"overrides", "iterations"}
