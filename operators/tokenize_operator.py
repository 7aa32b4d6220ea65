"""Standard-space regions -> tokens of every study, one disk-backed store per region name."""

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

        def tokenize(case: Case) -> None:
            for region in case.regions:
                scorer = batch.scorers.get(region.region)
                if scorer is None:
                    store = TokenStore(batch.work / "tokens" / region.slug)
                    scorer = BatchScorer(self.encoder, self.tokens, self.scoring, store)
                    batch.scorers[region.region] = scorer
                case.indices[region.region] = scorer.add(region.volume, region.mask)

        batch.each("tokenize", tokenize)
        op_output.emit(batch, "batch")
