"""Preloaded by a pool worker before it reports ready: fails while the environment says
so, so that a test can make real worker starts fail and then succeed again."""

import os

if os.environ.get("TENSORLENS_TEST_REFUSE_START"):
    raise ImportError("this worker was told not to start")
