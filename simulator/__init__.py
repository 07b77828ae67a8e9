"""Virtual meters on a pty pair that answer MODBUS/RTU like the real ones."""
