"""Pure policy core: routers, admission, predictor. No I/O, no clock: ``now_s`` is passed in."""
