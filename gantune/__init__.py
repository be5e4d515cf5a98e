"""gantune: search GAN augmentation pipelines for small medical image datasets.

The Python API (gantune/api.py): `gantune.search(...)`, `gantune.evaluate(...)`,
`gantune.promote(...)` and `gantune.generate(...)` return SearchResult, EvaluateResult,
PromoteResult and GenerateResult. Importing gantune imports none of Ray, MLflow or torch."""

__version__ = "0.1.0"

from gantune import search  # noqa: E402  (the driver package, callable: search/__init__.py)
from gantune.api import (  # noqa: E402
    EvaluateResult,
    GenerateResult,
    PromoteResult,
    SearchResult,
    UsageError,
    evaluate,
    generate,
    promote,
)

__all__ = ["search", "evaluate", "promote", "generate", "SearchResult", "EvaluateResult", "PromoteResult",
           "GenerateResult", "UsageError", "__version__"]
