"""Static assets of the live page served at ``/`` (packaged with the wheel)."""
