"""A contract-faithful Klaviyo API simulator for tests, the demo and benchmarks."""

from .server import KlaviyoSimulator
from .state import ALL_SCOPES, SimulatorConfig

__all__ = ["ALL_SCOPES", "KlaviyoSimulator", "SimulatorConfig"]
