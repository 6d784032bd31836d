"""The Open Inference Protocol ("KServe v2"): REST routes beside /classify and the gRPC service.

Files in the order a request takes them: paths.py (which REST paths are v2's), tensors.py (JSON and
binary tensors in, tensors out), model.py (what the served model takes and gives: metadata and
request checks), infer.py (a checked request through the same classify flow as /classify), http.py and
routes.py (REST), grpc_server.py (gRPC, from grpc_predict_v2.proto); errors.py maps failures to
statuses and gRPC codes.
"""
