"""Run the exchange simulator and feedd pointed at it: feedd with no internet needed.

The simulator runs at wall-clock speed in its own process; feedd uses the repository's
config.json with each exchange's URLs replaced by the simulator's, and its database in
./data/demo.db. Ctrl-C stops both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    sim = subprocess.Popen(
        [sys.executable, "-m", "feedd.sim", "--speed", "1"], stdout=subprocess.PIPE, text=True
    )
    assert sim.stdout is not None
    try:
        config = json.loads((ROOT / "config.json").read_text())
        venues = 0
        while venues < len(config["exchanges"]):
            line = sim.stdout.readline()
            if not line:
                print("demo: the simulator did not start", file=sys.stderr)
                return 1
            entry = json.loads(line) if line.startswith("{") else {}
            settings = config["exchanges"].get(entry.get("exchange"))
            if settings is not None:
                settings.update({k: v for k, v in entry.items() if k.endswith("_url")})
                venues += 1
        config.pop("database_path", None)
        config["storage"] = {"backend": "sqlite", "path": str(ROOT / "data" / "demo.db")}
        config["bootstrap_load"] = min(config.get("bootstrap_load", 10000), 1440)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(config, handle)
        print(
            f"demo: simulator up; dashboard on http://127.0.0.1:{config.get('port', 3000)}/",
            file=sys.stderr,
        )
        try:
            return subprocess.call([sys.executable, "-m", "feedd", "--config", handle.name])
        except KeyboardInterrupt:
            return 0
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    sys.exit(main())
