"""Pulumi program entry point (`main: infra/` in Pulumi.yaml): load the stack's spec, build the platform, export.

With `privatellm:mode` set to `mirror` (on a connected bastion), the program instead copies every image the stack
needs into the customer's registry (docs/images.md).
"""

import pulumi

from infra.config import load_spec
from infra.platform import build_platform

if pulumi.Config("privatellm").get("mode") == "mirror":
    from infra.supply.mirror import main as mirror  # pulumi-docker: only the connected bastion needs it

    mirror()
else:
    spec = load_spec()
    platform = build_platform(spec)
    pulumi.export("platform", platform.summary())
    if platform.gateway is not None:
        pulumi.export("gatewayUrl", f"https://{spec.gateway.hostname}/v1" if spec.gateway else None)
        # Per tenant, both valid API keys (slots a and b); a secret output, never shown in plain text.
        pulumi.export("tenantApiKeys", platform.gateway.tenant_keys_output())
