"""gRPC server and client of the interceptor bench: Debian's python3-grpcio on both ends.

No protoc: the service is a generic handler and the calls carry raw bytes (no serializers),
so `/bench.Echo/Unary` answers each request with its own bytes.

  serve CERT KEY           TLS server on 127.0.0.1 (ephemeral port), prints `PORT n`, serves
                           until its stdin closes (the bench holds the other end).
  client TARGET NAME CA SECS
                           one channel to TARGET (TLS verified against CA, for NAME), a warm-up,
                           then sequential unary calls for SECS; prints one `BENCH {json}` line.

A failed client prints its error in that line (and exits 0) so the bench reports the row as
FAILED and goes on with the others.
"""

import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "bench.Echo"
METHOD = "/bench.Echo/Unary"
PAYLOAD = b"x" * 64
WARMUP = 50
# Bounds the loop whatever the clock does.
MAX_CALLS = 1_000_000
CALL_TIMEOUT = 10


def serve(cert, key):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}
    )
    server.add_generic_rpc_handlers((handler,))
    with open(key, "rb") as k, open(cert, "rb") as c:
        creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()
    server.stop(grace=None)


def describe(e):
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


def client(target, name, ca, secs):
    result = {"metric": "grpc_unary"}
    try:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [
            ("grpc.ssl_target_name_override", name),
            # The port too: the gateway answers 421 to a request naming another port.
            ("grpc.default_authority", f"{name}:{target.rsplit(':', 1)[1]}"),
        ]
        with grpc.secure_channel(target, creds, options=options) as channel:
            call = channel.unary_unary(METHOD)
            for _ in range(WARMUP):
                if call(PAYLOAD, timeout=CALL_TIMEOUT) != PAYLOAD:
                    raise ValueError("the echo differed from the request")
            n = 0
            t0 = time.monotonic()
            deadline = t0 + secs
            while time.monotonic() < deadline and n < MAX_CALLS:
                if call(PAYLOAD, timeout=CALL_TIMEOUT) != PAYLOAD:
                    raise ValueError("the echo differed from the request")
                n += 1
            result.update(ok=n, secs=time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - any failure becomes the row's reason
        result["error"] = describe(e)[:300]
    print("BENCH " + json.dumps(result), flush=True)


def main(argv):
    if len(argv) == 3 and argv[0] == "serve":
        serve(argv[1], argv[2])
    elif len(argv) == 5 and argv[0] == "client":
        client(argv[1], argv[2], argv[3], float(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
