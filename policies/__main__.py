"""CrossGuard entry point (`pulumi preview --policy-pack policies`): only constructs the pack."""

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.pack import ALL_POLICIES, PACK_DESCRIPTION, PACK_NAME

PolicyPack(
    name=PACK_NAME,
    description=PACK_DESCRIPTION,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=ALL_POLICIES,
)
