"""mediscan: build, evaluate, explain and deploy medical image classifiers you can trust."""

__version__ = "0.1.0"
