"""`make sim`: the demo's two buses from contrib/sdm-demo.toml, read by one gateway."""

import signal

from tests.support import Process, free_port, http_request, python_cmd, wait_until


def test_demo_reads_both_buses_and_shows_the_id_collision(tmp_path):
    port = free_port()
    demo = Process(python_cmd("simulator.demo", "-u", f"127.0.0.1:{port}", "--seed", "3"), tmp_path / "demo.log")
    demo.spawn()
    try:
        def every_meter_read():
            try:
                status = http_request(port, "/status", timeout=1).json()
            except OSError:
                return False
            return all(m["CompleteReadings"] > 0 for m in status["ConfiguredMeters"])

        wait_until(every_meter_read, 20, what=f"the demo gateway on port {port}\n{demo.log()}")
        status = http_request(port, "/status").json()
        assert [(b["Name"], b["Transport"], b["Connected"]) for b in status["Buses"]] == [
            ("cabinet", "serial", True), ("garage", "rtu+tcp", True)]
        assert [r["UniqueId"] for r in http_request(port, "/last").json()] == [
            "house", "heatpump", "Instrument26", "wallbox"]
        clash = http_request(port, "/last/1")
        assert clash.status == 409 and clash.json()["meters"] == ["house", "wallbox"]
        assert http_request(port, "/last/wallbox").json()["ModbusDeviceId"] == 1
    finally:
        demo.signal(signal.SIGINT)
        assert demo.stop(10) == 0, demo.log()
