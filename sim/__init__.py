"""Deterministic simulation of Logos Chat: the real 1:1 engine on a simulated delivery network.

One seed drives every random choice, a virtual millisecond clock drives time, and a
discrete-event scheduler runs all devices in one process; see docs/reliability.md.
"""

from sim.runner import SimConfig, World, run, sweep

__all__ = ["SimConfig", "World", "run", "sweep"]
