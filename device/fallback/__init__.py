"""Ask a cloud provider when the local answer is weak.

The HTTP layer needs three names::

    router = FallbackRouter(config.fallback)
    outcome = router.search(image_bytes, top_k, local_best_score, deadline)  # never raises
    hits = router.merge(local_hits, outcome, top_k)   # native dicts, source local|cloud:<p>

``outcome.error`` (a :class:`CloudError` with ``kind``) is set when no provider answered;
``router.should_fail(outcome)`` says whether ``fallback.on_error`` wants that surfaced.
"""

from lensbox.device.fallback.base import CloudHit, CloudProvider, make_provider, rank_score
from lensbox.device.fallback.errors import CloudError, ErrorKind
from lensbox.device.fallback.merge import (
    cloud_hit_to_native,
    local_hit_to_native,
    merge_results,
)
from lensbox.device.fallback.router import FallbackOutcome, FallbackRouter

__all__ = [
    "CloudError",
    "CloudHit",
    "CloudProvider",
    "ErrorKind",
    "FallbackOutcome",
    "FallbackRouter",
    "cloud_hit_to_native",
    "local_hit_to_native",
    "make_provider",
    "merge_results",
    "rank_score",
]
