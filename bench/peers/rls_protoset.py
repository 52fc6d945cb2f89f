"""A protoset of Envoy's rate limit service for ``ghz``, written from the ``xds-protos`` package.

    python bench/peers/rls_protoset.py OUT.protoset

envoyproxy/ratelimit's gRPC port has no server reflection, so a load generator needs the service's
descriptors from elsewhere. Fetching ``rls.proto`` and its imports (validate, udpa annotations,
core v3 ...) by hand would pin a second copy of the protocol; the ``xds-protos`` package the server
already depends on carries the compiled descriptors of exactly the version our stubs speak. This
writes ``envoy/service/ratelimit/v3/rls.proto`` and every file it imports, transitively, as one
``FileDescriptorSet`` with each file after its dependencies (``ghz --protoset FILE``, like
``protoc --include_imports --descriptor_set_out``).
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["SERVICE", "METHOD", "CALL", "file_descriptor_set", "write_protoset"]

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
METHOD = "ShouldRateLimit"
#: ``ghz --call`` of the method.
CALL = f"{SERVICE}.{METHOD}"


def file_descriptor_set():
    """``rls.proto`` and its transitive imports as a ``FileDescriptorSet``, dependencies first."""
    from envoy.service.ratelimit.v3 import rls_pb2
    from google.protobuf import descriptor_pb2

    ordered: list = []
    seen: set[str] = set()

    def visit(file_descriptor) -> None:  # depth-first, post-order: imports before importers
        if file_descriptor.name in seen:
            return
        seen.add(file_descriptor.name)
        for dependency in file_descriptor.dependencies:
            visit(dependency)
        ordered.append(file_descriptor)

    visit(rls_pb2.DESCRIPTOR)
    out = descriptor_pb2.FileDescriptorSet()
    for file_descriptor in ordered:
        proto = out.file.add()
        file_descriptor.CopyToProto(proto)
    return out


def write_protoset(path: Path | str) -> Path:
    """Write the protoset to ``path`` (parents created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(file_descriptor_set().SerializeToString())
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(write_protoset(sys.argv[1]))
