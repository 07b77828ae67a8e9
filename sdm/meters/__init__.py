"""Meter models: one register table per family, found by type keyword."""

from .model import READ_HOLDING, READ_INPUT, MeterModel, Register
from .registry import MODELS, lookup

__all__ = ["MODELS", "READ_HOLDING", "READ_INPUT", "MeterModel", "Register", "lookup"]
