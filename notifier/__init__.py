"""notifier: AWS Step Functions workflows as synchronous HTTP calls."""

__version__ = "0.1.0"
