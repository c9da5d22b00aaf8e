"""The local world for the demo and the tests: simulators of every external system.

Import the module you need (`arb_orchestration.sim.exchange`, ...); nothing is
imported or started here.
"""
