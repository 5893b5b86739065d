"""Mirror mode: on a connected bastion, copy every image a stack runs into the registry the cluster pulls it from.

`pulumi up --stack S` with `privatellm:mode=mirror` runs `main()` instead of the platform: for each image of the
stack's inventory (`infra.supply.inventory.stack_inventory`, read from the platform's offline render) it pulls the
upstream `repo:tag` (`docker.RemoteImage`), tags it as the reference the cluster will pull (`docker.Tag`) and pushes it
(`docker.RegistryImage`), through a `docker.Provider` that holds each registry's credentials.

Most images go to `registry.host` (`privatellm:registryUsername`, secret `privatellm:registryPassword`). With a
managed Harbor, the images pulled before Harbor exists (Harbor's own and the PKI's) go to the bootstrap registry
(`registry.harbor.bootstrap_registry`; optional `privatellm:bootstrapRegistryUsername` and secret
`privatellm:bootstrapRegistryPassword`, else the bastion's `docker login`). `privatellm:mirrorTo` (`all`, default;
`bootstrap`; `registry`) picks which of the two a run pushes. The bastion needs a Docker engine and the
pulumi-docker plugin; the cluster side never does. Afterwards `private-llm images lock` pins the pushed digests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.config import PlatformSpec, StackConfigError, load_spec, project_dir
from infra.supply.inventory import ImageEntry, stack_inventory_isolated

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


MIRROR_TARGETS = ("all", "bootstrap", "registry")


def build_mirror(
    spec: PlatformSpec,
    images: list[ImageEntry],
    registry_username: pulumi.Input[str] | None,
    registry_password: pulumi.Input[str] | None,
    name: str = "image-mirror",
    bootstrap_username: pulumi.Input[str] | None = None,
    bootstrap_password: pulumi.Input[str] | None = None,
) -> list[MirroredImage]:
    """The mirror of `images` into the registries they are pulled from: `registry.host`, and for the images marked
    `bootstrap` (pulled before a managed Harbor exists) `registry.harbor.bootstrap_registry`. Each registry gets its
    own `registry_auth` entry, so credentials never go to the other one; passwords are kept Pulumi secrets. Without
    bootstrap credentials the bootstrap entry names only the address: the Docker engine's own login for it is used
    (`docker login <bootstrap registry>` on the bastion)."""
    if spec.registry is None:
        raise ValueError("the stack names no registry (registry.host): there is nowhere to mirror to")
    auths: list[docker.ProviderRegistryAuthArgs] = []
    if any(not entry.bootstrap for entry in images) or not images:
        if registry_username is None or registry_password is None:
            raise ValueError(f"credentials for {spec.registry.host} are needed to push its images")
        auths.append(
            docker.ProviderRegistryAuthArgs(
                address=spec.registry.host,
                username=registry_username,
                password=pulumi.Output.secret(registry_password),
            )
        )
    bootstraps = [entry for entry in images if entry.bootstrap]
    if bootstraps:
        if spec.registry.harbor is None:
            raise ValueError("images marked bootstrap, but the stack has no registry.harbor.bootstrap_registry")
        address = spec.registry.harbor.bootstrap_registry
        wrong = sorted(e.key for e in bootstraps if e.host != address)
        if wrong:
            raise ValueError(f"bootstrap images not rendered through {address}: {', '.join(wrong)}")
        if (bootstrap_username is None) != (bootstrap_password is None):
            raise ValueError("give both the bootstrap registry's user name and password, or neither")
        if bootstrap_username is not None and bootstrap_password is not None:
            auths.append(
                docker.ProviderRegistryAuthArgs(
                    address=address, username=bootstrap_username, password=pulumi.Output.secret(bootstrap_password)
                )
            )
        else:
            auths.append(docker.ProviderRegistryAuthArgs(address=address))
    provider = docker.Provider(f"{name}-docker", registry_auth=auths)
    component = ImageMirror(name, images, opts=pulumi.ResourceOptions(providers=[provider]))
    return component.images


def select_images(images: list[ImageEntry], target: str) -> tuple[list[ImageEntry], list[ImageEntry]]:
    """(to push, left out) for `privatellm:mirrorTo`: `all` pushes every image to the registry it is pulled from;
    `bootstrap` only the images pulled from the bootstrap registry (a first deploy with a managed Harbor: Harbor does
    not exist yet); `registry` only those pulled from `registry.host` (the bootstrap registry is loaded by the site's
    own tooling)."""
    if target not in MIRROR_TARGETS:
        raise ValueError(f"privatellm:mirrorTo={target!r} must be one of {', '.join(MIRROR_TARGETS)}")
    if target == "all":
        return list(images), []
    wanted = target == "bootstrap"
    return [i for i in images if i.bootstrap == wanted], [i for i in images if i.bootstrap != wanted]


def main() -> None:
    """Mirror-mode program body (the entry calls it when `privatellm:mode` is `mirror`)."""
    config = pulumi.Config(CONFIG_NAMESPACE)
    spec = load_spec()
    target = config.get("mirrorTo") or "all"
    # The inventory renders the platform offline, under its own mocks: in a child process, away from this program.
    images, charts = stack_inventory_isolated(config.require_object("platform"), project_dir())
    try:
        selected, left_out = select_images(images, target)
    except ValueError as exc:
        raise StackConfigError([str(exc)], pulumi.get_stack()) from None
    if target == "bootstrap" and not selected:
        raise StackConfigError(
            [
                "privatellm:mirrorTo=bootstrap, but the stack pulls nothing from a bootstrap registry (only a managed "
                "Harbor, registry.harbor, has one)"
            ],
            pulumi.get_stack(),
        )
    to_registry = any(not i.bootstrap for i in selected)
    mirrored = build_mirror(
        spec,
        selected,
        registry_username=config.require("registryUsername") if to_registry else None,
        registry_password=config.require_secret("registryPassword") if to_registry else None,
        bootstrap_username=config.get("bootstrapRegistryUsername"),
        bootstrap_password=config.get_secret("bootstrapRegistryPassword"),
    )
    pulumi.export(
        "mirrored",
        {m.entry.key: {"reference": m.entry.target, "digest": m.pushed.sha256_digest} for m in mirrored},
    )
    if left_out:
        # What this run did not push and the cluster still pulls: load it at exactly these references.
        pulumi.export("notMirrored", {i.key: i.target for i in left_out})
    # Charts are copied with helm (see docs/images.md); exported so the operator knows what to push and where the
    # program installs each from.
    pulumi.export(
        "charts",
        {
            c.key: {"upstream": c.upstream, "version": c.version, "to": c.reference, "installedFrom": c.source}
            for c in charts
        },
    )
