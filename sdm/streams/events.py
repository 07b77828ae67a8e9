"""The records the streams send, in gosdm630's shapes (docs/api.md, GET /ws and GET /firehose).

A meter update becomes one record per measurement it carries; a value the
meter gave as NaN or infinity (None in the hub) is left out, never sent as
an invalid JSON number.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from ..measurements import describe
from ..readings import rfc3339


def measured(values: Mapping[str, Optional[float]]) -> Iterator[Tuple[str, float]]:
    """(name, value) of every usable value, in read order."""
    for name, value in values.items():
        if value is not None:
            yield name, value


def ws_record(meter: str, device_id: int, name: str, value: float, timestamp: float) -> Dict[str, Any]:
    """A /ws meter frame: gosdm630's keys (read time in ms since the epoch), then the meter's name."""
    return {"DeviceId": device_id, "Value": value, "IEC61850": name,
            "Description": describe(name).description, "Timestamp": int(timestamp * 1000), "Meter": meter}


def firehose_record(meter: str, device_id: int, name: str, value: float, timestamp: float) -> Dict[str, Any]:
    """A /firehose meterupdate payload: gosdm630's keys (read time in RFC 3339), then the meter's name."""
    return {"DeviceId": device_id, "Value": value, "IEC61850": name,
            "Description": describe(name).description, "ReadTimestamp": rfc3339(timestamp), "Meter": meter}
