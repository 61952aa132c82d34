"""A gRPC client that no one in this project wrote: Python's grpcio, with stubs
generated from proto/ by grpcio-tools, errors decoded by grpcio-status into the
standard google.rpc.Status, and every service listed and called through server
reflection alone, the way grpcurl does (descriptors fetched from the server, no
generated code).

    python grpc_client.py PROTO_DIR HOST:PORT CA_FILE TOKEN_FILE

Prints one JSON object per case on standard output; the Rust test
(standard_errors.rs) starts the control plane and checks them.
"""

import importlib
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc


def generate_stubs(proto_dir, out):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    files = [
        os.path.join(root, f)
        for root, _, names in os.walk(proto_dir)
        for f in names
        if f.endswith(".proto")
    ]
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)


def decode(err):
    """What the standard library makes of an error: its google.rpc.Status."""
    out = {"grpc_code": err.code().name, "detail_types": []}
    status = rpc_status.from_call(err)
    if status is None:
        return out
    out["status_message"] = status.message
    for detail in status.details:
        out["detail_types"].append(detail.type_url)
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out["reason"] = info.reason
            out["domain"] = info.domain
            out["metadata"] = dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            out["retry_delay_seconds"] = retry.retry_delay.seconds
    return out


def call(case, method, request, metadata):
    try:
        method(request, metadata=metadata)
        print(json.dumps({"case": case, "grpc_code": "OK"}), flush=True)
    except grpc.RpcError as err:
        print(json.dumps({"case": case, **decode(err)}), flush=True)


def main():
    proto_dir, target, ca_file, token_file = sys.argv[1:5]
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(proto_dir, out)
        cp = importlib.import_module("writeback.v1.control_plane_pb2")
        cp_grpc = importlib.import_module("writeback.v1.control_plane_pb2_grpc")
        common = importlib.import_module("writeback.v1.common_pb2")

        with open(ca_file, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        with open(token_file) as f:
            token = f.read().strip()
        channel = grpc.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )
        auth = [("authorization", f"Bearer {token}")]
        passwords = cp_grpc.PasswordServiceStub(channel)

        def reset(upn):
            return cp.ResetPasswordRequest(
                user=common.UserRef(upn=upn), new_password="Py-Client-Passw0rd!"
            )

        call("no_user", passwords.ResetPassword, cp.ResetPasswordRequest(), auth)
        call("unknown_domain", passwords.ResetPassword, reset("x@nowhere.test"), auth)
        call(
            "bad_token",
            passwords.ResetPassword,
            reset("bob@contoso.test"),
            [("authorization", "Bearer wbt1.not-a-token")],
        )
        # No agent is online: each reset is recorded and refused; the sixth
        # within the hour is throttled.
        for i in range(6):
            call(f"reset_{i + 1}", passwords.ResetPassword, reset("bob@contoso.test"), auth)

        # Server reflection: what a generic client (grpcurl) uses to list and
        # call the services.
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=auth
        )
        names = [s.name for a in answers for s in a.list_services_response.service]
        print(json.dumps({"case": "reflection", "services": names}), flush=True)
        for name in names:
            if not name.startswith("grpc.reflection."):
                call_generically(channel, reflection, name, auth)


def reflected_pool(reflection, symbol, auth):
    """A descriptor pool of the files the server says define `symbol` (and
    their imports), as a generic client builds it."""
    def ask(request):
        answers = reflection.ServerReflectionInfo(iter([request]), metadata=auth)
        out = []
        for a in answers:
            if a.HasField("error_response"):
                sys.exit(f"reflection refused {request}: {a.error_response.error_message}")
            for raw in a.file_descriptor_response.file_descriptor_proto:
                out.append(descriptor_pb2.FileDescriptorProto.FromString(raw))
        return out

    files = {}
    todo = ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    # Imports the answer did not include are asked for by file name.
    while todo:
        fd = todo.pop()
        if fd.name in files:
            continue
        files[fd.name] = fd
        for dep in fd.dependency:
            if dep not in files:
                todo.extend(ask(reflection_pb2.ServerReflectionRequest(file_by_filename=dep)))
    pool = descriptor_pool.DescriptorPool()
    added = set()
    while len(added) < len(files):
        ready = [
            fd
            for name, fd in files.items()
            if name not in added and all(d in added for d in fd.dependency)
        ]
        if not ready:
            sys.exit(f"reflection gave files with unresolvable imports for {symbol}")
        for fd in ready:
            pool.Add(fd)
            added.add(fd.name)
    return pool


def pick_method(service):
    """A read-only method when there is one: List*, then Get*, then WhoAmI,
    else the first unary method (called with an empty request: refused)."""
    unary = [m for m in service.methods if not m.client_streaming and not m.server_streaming]
    for prefix in ("List", "Get", "WhoAmI"):
        for m in unary:
            if m.name.startswith(prefix):
                return m
    return unary[0] if unary else None


def call_generically(channel, reflection, name, auth):
    """One call of service `name` with an empty request, encoded and decoded
    from reflected descriptors only."""
    pool = reflected_pool(reflection, name, auth)
    service = pool.FindServiceByName(name)
    method = pick_method(service)
    case = {"case": "generic_call", "service": name}
    if method is None:
        print(json.dumps({**case, "method": None}), flush=True)
        return
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    invoke = channel.unary_unary(
        f"/{name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    case["method"] = method.name
    try:
        response = invoke(request_class(), metadata=auth)
        case["grpc_code"] = "OK"
        case["response"] = json_format.MessageToDict(response)
    except grpc.RpcError as err:
        case.update(decode(err))
    print(json.dumps(case), flush=True)


if __name__ == "__main__":
    main()
