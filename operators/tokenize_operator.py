"""Standard-space volumes -> tokens of every study in a disk-backed store (cs3f.pipeline)."""

from __future__ import annotations

from cs3f.encoders import SliceEncoder
from cs3f.pipeline import BatchScorer, ScoringSettings
from cs3f.store import TokenStore
from cs3f.tokens import TokenSettings
from operators.batch import Batch, Case
from operators.batch_stage import BatchStage


class TokenizeOperator(BatchStage):
    def __init__(
        self,
        fragment,
        *args,
        encoder: SliceEncoder,
        tokens: TokenSettings,
        scoring: ScoringSettings,
        **kwargs,
    ):
        self.encoder, self.tokens, self.scoring = encoder, tokens, scoring
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input, op_output, context):
        batch: Batch = op_input.receive("batch")
        store = TokenStore(batch.work / "tokens")
        batch.scorer = BatchScorer(self.encoder, self.tokens, self.scoring, store)

        def tokenize(case: Case) -> None:
            case.index = batch.scorer.add(case.standard.volume, case.standard.mask)

        batch.each("tokenize", tokenize)
        op_output.emit(batch, "batch")
