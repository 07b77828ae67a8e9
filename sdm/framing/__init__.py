"""Framing: the bytes of a MODBUS request and the checks every reply must pass.

``rtu`` frames for a serial line or a transparent RTU-over-TCP gateway;
``mbap`` for Modbus TCP.  Each exposes a Link (see sdm.transport) a bus polls through.
"""
