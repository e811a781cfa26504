"""Starts moto's server on 127.0.0.1 with pv2hvm's patches (moto_patches.py) loaded.

    python server.py PORT
Prints "ready PORT" on stdout once it accepts connections.
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
# No made-up public AMIs (and their hundreds of snapshots): only what the tests create.
os.environ.setdefault("MOTO_AMIS_PATH", os.path.join(here, "no-amis.json"))

import moto_patches  # noqa: E402,F401  (applies the patches on import)
import iam  # noqa: E402,F401  (IAM checked as AWS checks it, once `tool.py auth on`)

if os.environ.get("PV2HVM_MOTO_LENIENT") != "1":
    import strict  # noqa: E402,F401  (AWS's rules where moto is lenient)
from moto.server import ThreadedMotoServer  # noqa: E402

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print(f"ready {server._server.server_port}", flush=True)
try:
    sys.stdin.read()  # runs until the test closes stdin or kills it
finally:
    server.stop()
