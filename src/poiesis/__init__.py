"""Poiesis: a GA4GH Task Execution Service (TES) v1.1.0 for Kubernetes."""

__version__ = "0.1.0"
