"""A sandbox Customer.io Track API that validates, records and misbehaves on request."""

from service.sandbox.app import create_sandbox_app
from service.sandbox.server import serve
from service.sandbox.state import SandboxConfig

__all__ = ["SandboxConfig", "create_sandbox_app", "serve"]
