"""The shape of the graph's own operators: at most one input port and one output port, each
named for the stage data (:mod:`operators.stages`) that flows through it."""

from __future__ import annotations

from typing import Any

from monai.deploy.core import Operator, OperatorSpec


class Stage(Operator):
    """Subclasses name their ports (``receives``, ``emits``: "" for none) and implement
    :meth:`run`, which maps the received stage data to the emitted one."""

    receives = ""
    emits = ""

    def setup(self, spec: OperatorSpec):
        if self.receives:
            spec.input(self.receives)
        if self.emits:
            spec.output(self.emits)

    def compute(self, op_input, op_output, context):
        result = self.run(op_input.receive(self.receives) if self.receives else None)
        if self.emits:
            op_output.emit(result, self.emits)

    def run(self, data: Any) -> Any:
        raise NotImplementedError
