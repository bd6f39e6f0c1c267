"""A sandbox Customer.io Track API that validates, records and misbehaves on request."""

from sandbox.app import create_sandbox_app
from sandbox.server import serve
from sandbox.state import SandboxConfig

__all__ = ["SandboxConfig", "create_sandbox_app", "serve"]
