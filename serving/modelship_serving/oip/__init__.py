"""Generated from serving/proto/grpc_predict_v2.proto by scripts/grpc-stubs.sh."""
