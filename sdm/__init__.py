"""sdm: a gateway from MODBUS/RTU smart energy meters to HTTP.

Data flows one way: transport -> rtu (framing) -> meters (register tables)
-> plan -> poller -> hub -> outputs (api, streams, tools).
"""

__version__ = "0.1.0"
