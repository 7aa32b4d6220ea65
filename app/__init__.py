"""The CS3F screening application (MONAI Deploy): ``python -m app -i IN -o OUT [-m MODELS]``."""

import operators  # noqa: F401  (first: makes holoscan importable without a GPU driver)
