"""Shared fixtures. Tests run on timm's tiny ``test_*`` models with random weights, on the CPU."""

import os

# No network here: without this the hub retries for about a minute before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """test_efficientnet with seeded random weights (160 px input)."""
    from reportgen.models import load_model

    return load_model("test_efficientnet", "none", "cpu", seed=0)


@pytest.fixture(scope="session")
def tiny_catalogue(tiny):
    from reportgen.layers import catalogue

    return catalogue(tiny.module, tiny.preprocess.input_size)
