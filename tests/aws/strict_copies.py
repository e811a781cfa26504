"""Strict rules for AMI copies and snapshot deletion (loaded by strict.py, so on in every AWS test).

S9. CopyImage (EC2 API reference, CopyImage; EC2 user guide, "Copy an AMI" and "Encryption and
    AMI copy"): the copy in the destination region is backed by new snapshots there, which only
    the call's TagSpecifications with ResourceType "snapshot" can tag ("The same tag is applied
    to all the new snapshots"); the "image" TagSpecifications tag the copy. moto makes no
    snapshots, applies no TagSpecifications, and its copy keeps pointing at the source region's
    snapshots. The new snapshots are encrypted when the source's are, when Encrypted is true or
    when the destination encrypts by default; the key is KmsKeyId, else the destination's
    default EBS key: a source key never crosses regions. KmsKeyId without Encrypted is
    refused, and so is a key ARN of another region. ClientToken makes the call idempotent
    (same token, same copy; same token with other parameters, IdempotentParameterMismatch).
    The snapshots start pending and complete a moment later, then the copy is available.
    Faults injected for CopyImage (moto_patches 9) are dealt to repeated calls too.
    Test-only variant: a source AMI tagged `moto:copy-fails` = REGION gives copies in REGION
    that end "failed" (their snapshots "error").
S11. DescribeRegions lists the regions of the caller's partition (EC2 API reference,
    DescribeRegions; AWS General Reference, "AWS partitions": an account and its credentials
    belong to one partition). moto lists the aws-cn and aws-us-gov regions too.
S2b. Foreign snapshots, test-only variant: a snapshot tagged `moto:owner` = ACCOUNT is owned
    by that account (its OwnerId), as one shared with this account would be; strict.py's S2
    then refuses it as a ParentSnapshotId, and DescribeSnapshots OwnerIds=self leaves it out.
S10. DeleteSnapshot of a snapshot that backs a registered AMI is InvalidSnapshot.InUse (EC2 API
    reference, DeleteSnapshot: "you must first deregister the AMI"). moto checks only the AMIs it
    made itself.
"""

from moto.ebs import models as ebs_models
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.responses import availability_zones_and_regions as regions_responses

import moto_patches as base
import strict

AMIS = strict.AMIS
SNAP = strict.SNAP
_strict_copy_image = AMIS.copy_image
_orig_delete_snapshot = SNAP.delete_snapshot
_tokens = {}


def default_key(region, account):
    return f"arn:aws:kms:{region}:{account}:alias/aws/ebs"


def _tag_specs(self, kind):
    out = {}
    for spec in self._get_param("TagSpecifications", []) or []:
        if spec.get("ResourceType") == kind:
            out.update({t["Key"]: t.get("Value", "") for t in spec.get("Tags", []) or []})
    return out


def _copy_image(self):
    dest = self.ec2_backend
    region, account = dest.region_name, dest.account_id
    encrypted = str(self._get_param("Encrypted", False)).lower() == "true"
    key = self._get_param("KmsKeyId")
    if key and not encrypted:
        raise EC2ClientError("InvalidParameterDependency", "KmsKeyId requires Encrypted to be true")
    if key and key.startswith("arn:aws:kms:") and key.split(":")[3] != region:
        raise EC2ClientError("InvalidParameterValue", f"The KMS key {key} is not in {region}")
    token = self._get_param("ClientToken")
    params = (self._get_param("SourceImageId"), self._get_param("SourceRegion"), self._get_param("Name"), encrypted,
              key)
    if token and (region, token) in _tokens:
        # A repeated call is a call too: injected faults (moto_patches 9) reach it.
        if strict._is_pv2hvm():
            base._maybe_fail("CopyImage", ec2=True)
        seen, image_id = _tokens[(region, token)]
        if seen != params:
            raise EC2ClientError("IdempotentParameterMismatch", f"ClientToken {token} was used with other parameters")
        return _result(image_id)
    out = _strict_copy_image(self)
    image_id = out.result["ImageId"]
    if token:
        _tokens[(region, token)] = (params, image_id)
    ami = dest.amis[image_id]
    src_backend = ec2_backends[account][self._get_param("SourceRegion")]
    src_ami = src_backend.amis[self._get_param("SourceImageId")]
    image_tags = _tag_specs(self, "image")
    if image_tags:
        dest.create_tags([image_id], image_tags)
    snapshot_tags = _tag_specs(self, "snapshot")
    fails = any(t.get("key") == "moto:copy-fails" and t.get("value") == region
                for t in src_backend.describe_tags(filters={"resource-id": [src_ami.id]}))
    mappings = []
    made = []
    for m in src_ami.__dict__.get("_pv2hvm_mappings") or []:
        m = {**m, "Ebs": dict(m["Ebs"])} if m.get("Ebs") else dict(m)
        sid = (m.get("Ebs") or {}).get("SnapshotId")
        if sid:
            src_snap = src_backend.snapshots[sid]
            vol = dest.create_volume(size=src_snap.volume.size, zone_name=f"{region}a")
            snap = dest.create_snapshot(volume_id=vol.id, description=f"Copied for DestinationAmi {image_id} from "
                                        f"SourceAmi {src_ami.id} for SourceSnapshot {sid}")
            snap.encrypted = bool(src_snap.encrypted) or encrypted or dest.ebs_encryption_by_default
            snap.kms_key_id = (key or default_key(region, account)) if snap.encrypted else None
            snap.status = "pending"
            if snapshot_tags:
                dest.create_tags([snap.id], snapshot_tags)
            # The copy holds the source's blocks.
            src_ebs_backend = ebs_models.ebs_backends[account][src_backend.region_name]
            copy = ebs_models.EBSSnapshot(account_id=account, snapshot=snap)
            copy.blocks = dict(base._blocks(src_ebs_backend, base._ebs_snapshot(src_ebs_backend, sid)))
            ebs_models.ebs_backends[account][region].snapshots[snap.id] = copy
            m["Ebs"]["SnapshotId"] = snap.id
            made.append(snap.id)
            strict._fresh_id(snap.id)
        mappings.append(m)
    ami._pv2hvm_mappings = mappings

    def settle():
        for sid in made:
            s = dest.snapshots.get(sid)
            if s is not None and s.status == "pending":
                s.status = "error" if fails else "completed"
        img = dest.amis.get(image_id)
        if img is not None and img.state == "pending":
            img.state = "failed" if fails else "available"
            if fails:
                img.state_reason = {"Code": "Client.CopyFailed", "Message": "test-only copy failure"}

    strict._later(image_id, settle)
    return out


def _result(image_id):
    from moto.core.responses import ActionResult

    return ActionResult({"ImageId": image_id})


def _delete_snapshot(self):
    sid = self._get_param("SnapshotId")
    for ami in self.ec2_backend.amis.values():
        for m in ami.__dict__.get("_pv2hvm_mappings") or []:
            if (m.get("Ebs") or {}).get("SnapshotId") == sid:
                raise EC2ClientError("InvalidSnapshot.InUse", f"The snapshot {sid} is currently in use by {ami.id}")
    return _orig_delete_snapshot(self)


def _describe_regions(self):
    out = _orig_describe_regions(self)
    out.result["Regions"] = [r for r in out.result["Regions"] if not r.name.startswith(("cn-", "us-gov-"))]
    return out


_orig_describe_regions = regions_responses.AvailabilityZonesAndRegions.describe_regions
regions_responses.AvailabilityZonesAndRegions.describe_regions = _describe_regions
def _create_tags(self):
    out = _orig_create_tags(self)
    for t in self._get_param("Tags", []) or []:
        if t.get("Key") == "moto:owner":
            for rid in self._get_param("Resources", []) or []:
                snap = self.ec2_backend.snapshots.get(rid)
                if snap is not None:
                    snap.owner_id = t.get("Value")
    return out


_orig_create_tags = strict.TAGS.create_tags
strict.TAGS.create_tags = _create_tags
AMIS.copy_image = _copy_image
SNAP.delete_snapshot = _delete_snapshot
