"""The README's webhook lines, run by bash as written (URL, KEY and the receiver's HOOK_URL set),
with `ledgerq webhooks` running and a real receiver: the endpoint is made, the deposit's event
is delivered, the deliveries view shows it, the delete answers 204."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.chaos.cluster import LEDGERQ, Cluster
from tests.operate.test_readme_examples import README


def test_the_webhook_lines_do_what_the_readme_says(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_worker([])
    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with (tmp_path / "webhooks.log").open("wb") as log:
        deliverer = subprocess.Popen([*LEDGERQ, "webhooks"], env=cluster.env, stdout=log, stderr=log)
    try:
        found = re.search(r"## Events and webhooks.*?```sh\n(.*?)```", README, re.S)
        assert found
        script = found.group(1)
        hook_url = f"http://127.0.0.1:{server.server_address[1]}/ledgerq-hook"
        script = re.sub(r"^HOOK_URL=\S+", f"HOOK_URL={hook_url}", script, count=1, flags=re.M)
        script = f"URL={cluster.url}\nKEY={cluster.key}\n{script}"
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path
        )
    finally:
        deliverer.terminate()
        assert deliverer.wait(timeout=60) == 0
        server.shutdown()
    made, queued, deliveries, deleted = done.stdout.strip().splitlines()
    assert json.loads(made)["url"] == hook_url and json.loads(made)["secret"].startswith("whsec_")
    assert json.loads(queued)["status"] == "queued"
    (delivery,) = json.loads(deliveries)["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempts"][0]["status_code"] == 200
    assert deleted == "204"
    assert [e["command_id"] for e in received] == ["dep-c1"]
