"""Exchange simulator: Binance USD-M, Bybit v5 linear and OKX v5 SWAP on loopback, with
deterministic prices, scriptable faults and the truth of every candle (``python -m feedd.sim``).
"""

from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import VENUES, SimSettings
from feedd.sim.venue import TruthCandle

__all__ = ["VENUES", "SimSettings", "Simulator", "TruthCandle", "open_simulator"]
