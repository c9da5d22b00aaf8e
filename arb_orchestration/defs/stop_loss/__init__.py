"""Dagster definitions of the stop_loss domain: the emergency stop-loss saga and its recovery sensors."""

from dagster import Definitions

from arb_orchestration.defs.stop_loss.saga import StopLossConfig, emergency_stop_loss_saga, stop_loss_saga

defs = Definitions(
    jobs=[emergency_stop_loss_saga],
    sensors=stop_loss_saga.recovery_sensors(),
)

__all__ = ["StopLossConfig", "defs", "emergency_stop_loss_saga", "stop_loss_saga"]
