"""The Python client's modules, generated from proto/fjord.proto with grpcio-tools into a
temporary directory (never committed) when this module is first imported:

    from fjord_stubs import pb, rpc
"""

import importlib
import os
import subprocess
import sys
import tempfile

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def _generate():
    out = tempfile.mkdtemp(prefix="fjord-py-")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
         f"--python_out={out}", f"--grpc_python_out={out}",
         os.path.join(PROTO_DIR, "fjord.proto")],
        check=True,
    )
    sys.path.insert(0, out)


_generate()
pb = importlib.import_module("fjord_pb2")
rpc = importlib.import_module("fjord_pb2_grpc")
