"""Integration fixtures. The real-vLLM ones live in ``conftest_vllm.py``."""

from tests.integration.conftest_vllm import vllm_pd_pair, vllm_redis_url

__all__ = ["vllm_pd_pair", "vllm_redis_url"]
