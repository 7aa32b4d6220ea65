"""The shape every middle stage of the graph shares: the Batch in on port ``batch``, out on
port ``batch``."""

from __future__ import annotations

from monai.deploy.core import Operator, OperatorSpec


class BatchStage(Operator):
    """Base of the operators that receive the Batch, work on it and hand it on."""

    def setup(self, spec: OperatorSpec):
        spec.input("batch")
        spec.output("batch")
