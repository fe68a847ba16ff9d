"""``slaplane profile``: measure an OpenAI-compatible endpoint into a sim/predictor profile."""
