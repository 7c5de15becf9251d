#!/usr/bin/env bash
# Generate the Open Inference Protocol's gRPC messages (grpc_predict_v2_pb2.py and its .pyi)
# from serving/proto/grpc_predict_v2.proto, into the server and into the client (a separate
# distribution that cannot import the server). Only the messages: both sides register and
# call the service's methods by name (serving/modelship_serving/grpc_server.py,
# client/modelship/client/grpc.py), so no *_pb2_grpc.py is needed.
# tests/serving/test_grpc_stubs.py fails when the committed files differ from this output.
# Usage: scripts/grpc-stubs.sh [OUT_ROOT] (default: the repository; the test passes a
# temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
root=${1:-.}
for target in serving/modelship_serving/oip client/modelship/client/oip; do
  mkdir -p "$root/$target"
  "$python" -m grpc_tools.protoc -I serving/proto \
    --python_out="$root/$target" --pyi_out="$root/$target" serving/proto/grpc_predict_v2.proto
  # A pool of its own, not protobuf's default one: the package name "inference" is also
  # tritonclient's (and KServe's, MLServer's), whose messages would clash with these in the
  # default pool of a process that imports both (and the server's and the client's copies).
  sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
    "$root/$target/grpc_predict_v2_pb2.py"
  grep -q '_descriptor_pool.DescriptorPool().AddSerializedFile(' "$root/$target/grpc_predict_v2_pb2.py"
  printf '"""Generated from serving/proto/grpc_predict_v2.proto by scripts/grpc-stubs.sh."""\n' \
    > "$root/$target/__init__.py"
done
