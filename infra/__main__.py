"""Pulumi program entry point (`main: infra/` in Pulumi.yaml): load the stack's spec, build the platform, export."""

import pulumi

from infra.config import load_spec
from infra.platform import build_platform

spec = load_spec()
platform = build_platform(spec)
pulumi.export("platform", platform.summary())
