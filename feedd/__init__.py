"""feedd: an OHLCV collector for crypto futures that speaks each exchange's protocol natively."""

__version__ = "0.1.0"
