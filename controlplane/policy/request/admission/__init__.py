"""Admission policies: rate limits, admit fraction, predictive rejection, saturation."""

from controlplane.policy.request.admission.displace import DisplaceParams, QueuedRequest
from controlplane.policy.request.admission.policy import (
    AdmissionContext,
    AdmissionParams,
    AdmissionPolicy,
    QueueParams,
)
from controlplane.policy.request.admission.rate_limit import (
    BucketSpec,
    LocalBuckets,
    LocalSlots,
    bucket_specs,
    estimate_tokens,
)

__all__ = [
    "AdmissionContext",
    "AdmissionParams",
    "AdmissionPolicy",
    "BucketSpec",
    "DisplaceParams",
    "LocalBuckets",
    "LocalSlots",
    "QueueParams",
    "QueuedRequest",
    "bucket_specs",
    "estimate_tokens",
]
