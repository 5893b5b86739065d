"""Mirror mode: on a connected bastion, copy every image a stack runs into the customer's registry.

`pulumi up --stack S` with `privatellm:mode=mirror` runs `main()` instead of the platform: for each image of the
stack's inventory (`infra.images.stack_inventory`) it pulls the upstream `repo:tag` (`docker.RemoteImage`), tags it
as the reference the cluster will pull (`docker.Tag`) and pushes it (`docker.RegistryImage`), through a
`docker.Provider` that holds the registry credentials (`privatellm:registryUsername`, secret
`privatellm:registryPassword`). The bastion needs a Docker engine and the pulumi-docker plugin; the cluster side
never does. Afterwards `private-llm images lock` pins the pushed digests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.config import PlatformSpec, load_spec, project_dir
from infra.images import ImageEntry, stack_inventory

COMPONENT_TYPE = "privatellm:supplychain:ImageMirror"
CONFIG_NAMESPACE = "privatellm"


@dataclass(frozen=True)
class MirroredImage:
    entry: ImageEntry
    remote: docker.RemoteImage
    tag: docker.Tag
    pushed: docker.RegistryImage


class ImageMirror(pulumi.ComponentResource):
    """Pull → tag → push of each image; the docker provider (with the registry's credentials) comes through opts."""

    images: list[MirroredImage]

    def __init__(
        self,
        name: str,
        images: Sequence[ImageEntry],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        keys = [entry.key for entry in images]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"image mirror {name!r}: catalog keys listed twice: {', '.join(duplicates)}")
        self.images = []
        for entry in images:
            child = pulumi.ResourceOptions(parent=self)
            remote = docker.RemoteImage(
                f"{name}-{entry.key}-pull",
                name=entry.upstream,
                keep_locally=True,
                opts=child,
            )
            tag = docker.Tag(
                f"{name}-{entry.key}-tag",
                source_image=remote.image_id,
                target_image=entry.target,
                tag_triggers=[remote.image_id],
                opts=child,
            )
            pushed = docker.RegistryImage(
                f"{name}-{entry.key}-push",
                name=tag.target_image,
                keep_remotely=True,
                triggers={"source_image_id": remote.image_id},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[tag]),
            )
            self.images.append(MirroredImage(entry, remote, tag, pushed))
        self.digests = pulumi.Output.from_input(
            {m.entry.key: {"reference": m.entry.target, "digest": m.pushed.sha256_digest} for m in self.images}
        )
        self.register_outputs({"images": self.digests})


def build_mirror(
    spec: PlatformSpec,
    images: list[ImageEntry],
    registry_username: pulumi.Input[str],
    registry_password: pulumi.Input[str],
    name: str = "image-mirror",
) -> list[MirroredImage]:
    """The mirror of `images` into the stack's registry; the password is kept a Pulumi secret."""
    if spec.registry is None:
        raise ValueError("the stack names no registry (registry.host): there is nowhere to mirror to")
    provider = docker.Provider(
        f"{name}-docker",
        registry_auth=[
            docker.ProviderRegistryAuthArgs(
                address=spec.registry.host,
                username=registry_username,
                password=pulumi.Output.secret(registry_password),
            )
        ],
    )
    component = ImageMirror(name, images, opts=pulumi.ResourceOptions(providers=[provider]))
    return component.images


def main() -> None:
    """Mirror-mode program body (the entry calls it when `privatellm:mode` is `mirror`)."""
    config = pulumi.Config(CONFIG_NAMESPACE)
    spec = load_spec()
    images, charts = stack_inventory(spec, project_dir())
    # Harbor's own images go to the bootstrap registry (loaded before Harbor exists), not into Harbor.
    images = [i for i in images if not i.key.startswith("harbor-")]
    mirrored = build_mirror(
        spec,
        images,
        registry_username=config.require("registryUsername"),
        registry_password=config.require_secret("registryPassword"),
    )
    pulumi.export(
        "mirrored",
        {m.entry.key: {"reference": m.entry.target, "digest": m.pushed.sha256_digest} for m in mirrored},
    )
    # Charts are copied with helm (see docs/images.md); exported so the operator knows what to push.
    pulumi.export("charts", {c.key: {"upstream": c.upstream, "version": c.version, "to": c.reference} for c in charts})
