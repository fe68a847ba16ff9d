"""Admission policies: rate limits, admit fraction, predictive rejection, saturation."""

from controlplane.policy.admission.policy import (
    AdmissionContext,
    AdmissionParams,
    AdmissionPolicy,
    QueueParams,
)
from controlplane.policy.admission.rate_limit import (
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
    "LocalBuckets",
    "LocalSlots",
    "QueueParams",
    "bucket_specs",
    "estimate_tokens",
]
