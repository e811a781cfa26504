"""Fixes for the gaps of moto 5.2 that pv2hvm's AWS tests depend on, applied at server start.

Each patch names the gap it closes:

1. EBS direct block size: moto reports 512; EBS uses 524288-byte blocks.
2. StartSnapshot ignores ParentSnapshotId and ClientToken: a child now sees its parent's
   blocks (ListSnapshotBlocks, GetSnapshotBlock, ListChangedBlocks), and a repeated token
   returns the same snapshot. Encrypted with a parent is refused, as in EBS.
3. Snapshots are "completed" before CompleteSnapshot: they stay "pending" until it.
4. GetSnapshotBlock on a snapshot made by EC2 CreateSnapshot fails with HTTP 500: such a
   snapshot is materialised lazily from the blocks of the snapshot its volume was made from.
5. A missing block gives HTTP 500: it gives a 400 ValidationException, as EBS does.
6. PutSnapshotBlock never checks the checksum: a wrong SHA-256 or length is a 400.
7. RegisterImage keeps only Name and Description, and DescribeImages invents a 15 GiB
   mapping: the image keeps its BlockDeviceMappings, root device, virtualization type,
   architecture, kernel id, EnaSupport, SriovNetSupport, BootMode and TagSpecifications.
8. RunInstances from such an image gets an empty 8 GiB root volume: the instance gets the
   image's mappings as volumes made from its snapshots.
10. Test-only variants: an image registered with the tag `moto:platform=windows`,
    `moto:product-code=CODE` or `moto:root-device-type=instance-store` (and its instances)
    reports that platform, a Marketplace product code or an instance-store root.
9. Fault injection (opt in): when the file named by PV2HVM_MOTO_FAULTS_FILE appears holding
   "put=3:throttle,get=2:500", the next 3 PutSnapshotBlock calls fail with
   RequestThrottledException and the next 2 GetSnapshotBlock calls with an HTTP 500; each
   injected failure is logged to the same name + ".log" as "OP KIND TIME KEY" (seconds since
   the epoch; the key names the block: "snap-… 12"). strict.py arms the other calls by the
   names its rules use (start, complete, list, CreateSnapshot, RegisterImage, …), for pv2hvm
   only; the kind "denied" is an UnauthorizedOperation / AccessDeniedException, which no
   retry fixes.
11. Call log and slow registration (opt in, for kill-and-resume tests): with
    PV2HVM_MOTO_CALLS_FILE set, every PutSnapshotBlock appends "put" and every RegisterImage
    "register" to that file as it starts; PV2HVM_MOTO_REGISTER_DELAY (seconds) makes each
    RegisterImage take that long, leaving a window to kill the client mid-call.
12. RegisterImage accepts a name already in use: it fails with InvalidAMIName.Duplicate, as
    EC2 does (AMI names are unique per account and region).
14. Volumes hold no data of their own: every volume reads back as the snapshot it was made
    from, so a volume written to since launch cannot be told from its AMI. A volume tagged
    `moto:content=SNAP` (test-only, set by tests/aws/tool.py) holds SNAP's blocks instead: a
    snapshot EC2 CreateSnapshot makes of it reads as SNAP, as a snapshot of a volume reads as
    what the volume holds (EBS user guide, "Amazon EBS snapshots"): what it held when the
    snapshot was taken, so that a later edit of the volume (a new `moto:content`) leaves the
    older snapshots as they were.
13. Latency (opt in, for benchmarks): with PV2HVM_MOTO_EBS_LATENCY_MS set, every EBS direct
    request (StartSnapshot, PutSnapshotBlock, GetSnapshotBlock, ListSnapshotBlocks,
    ListChangedBlocks, CompleteSnapshot) waits that long before it is served, as a request
    to a distant endpoint would. Each request has its own server thread, so waits overlap.
"""

import base64
import hashlib
import os
import threading
import time

from moto.core.exceptions import JsonRESTError
from moto.ebs import models as ebs_models
from moto.ebs import responses as ebs_responses
from moto.ec2.models import amis as ec2_amis
from moto.ec2.models import elastic_block_store as ec2_ebs
from moto.ec2.models import instances as ec2_instances
from moto.ec2.responses import amis as ec2_amis_responses

BLOCK = 524288


class ValidationException(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("ValidationException", message)


class ThrottledException(JsonRESTError):
    code = 400

    def __init__(self):
        super().__init__("RequestThrottledException", "injected throttling")


class InternalServerException(JsonRESTError):
    code = 500

    def __init__(self):
        super().__init__("InternalServerException", "injected server error")


# 9. Fault injection: armed when the test writes the file PV2HVM_MOTO_FAULTS_FILE (after seeding),
# each injected failure logged to that file's name + ".log".
_faults = {}
_faults_lock = threading.Lock()
_faults_file = os.environ.get("PV2HVM_MOTO_FAULTS_FILE")


def _arm():
    if not _faults_file or not os.path.exists(_faults_file):
        return
    with open(_faults_file) as f:
        text = f.read().strip()
    os.remove(_faults_file)
    _faults.clear()
    for spec in filter(None, text.split(",")):
        op, rest = spec.split("=")
        count, kind = rest.split(":")
        _faults[op] = [int(count), kind]


class AccessDeniedException(JsonRESTError):
    code = 403

    def __init__(self):
        super().__init__("AccessDeniedException", "injected: not authorized")


def ec2_error(kind):
    """An EC2 error of `kind` (throttle, denied, else a 500). moto's EC2ClientError takes its
    HTTP status from the service model (400 for codes it does not know): a 5xx needs an
    HTTPException, whose `code` is the status."""
    from moto.core.exceptions import _RESTError
    from moto.ec2.exceptions import EC2ClientError

    if kind == "throttle":
        return EC2ClientError("RequestLimitExceeded", "Request limit exceeded.")
    if kind == "denied":
        return EC2ClientError("UnauthorizedOperation", "You are not authorized to perform this operation.")

    class InternalError(_RESTError):
        code = 500

    return InternalError("InternalError", "An internal error has occurred")


def _maybe_fail(op, key="", ec2=False):
    with _faults_lock:
        _arm()
        f = _faults.get(op)
        if not f or f[0] <= 0:
            return
        f[0] -= 1
        kind = f[1]
        with open(_faults_file + ".log", "a") as log:
            log.write(f"{op} {kind} {time.time():.3f} {key}".rstrip() + "\n")
    if ec2:
        raise ec2_error(kind)
    if kind == "denied":
        raise AccessDeniedException()
    raise ThrottledException() if kind == "throttle" else InternalServerException()


# 11. Call log and slow registration.
_calls_file = os.environ.get("PV2HVM_MOTO_CALLS_FILE")
_calls_lock = threading.Lock()


def _log_call(name):
    if not _calls_file:
        return
    with _calls_lock, open(_calls_file, "a") as log:
        log.write(name + "\n")


# 13. Latency per EBS direct request.
_latency = float(os.environ.get("PV2HVM_MOTO_EBS_LATENCY_MS", "0") or 0) / 1000


def _wait():
    if _latency > 0:
        time.sleep(_latency)


# 1. and 3.
_orig_snapshot_init = ebs_models.EBSSnapshot.__init__


def _snapshot_init(self, account_id, snapshot):
    _orig_snapshot_init(self, account_id, snapshot)
    self.block_size = BLOCK
    self.parent = None
    self.source = None


ebs_models.EBSSnapshot.__init__ = _snapshot_init


def _ebs_snapshot(backend, snapshot_id):
    """The EBS view of a snapshot; 4. materialises one EC2 made from its volume's source."""
    snap = backend.snapshots.get(snapshot_id)
    if snap is not None:
        return snap
    try:
        ec2_snap = backend.ec2_backend.snapshots[snapshot_id]
    except KeyError:
        raise ValidationException(f"The snapshot '{snapshot_id}' does not exist.")
    snap = ebs_models.EBSSnapshot(account_id=backend.account_id, snapshot=ec2_snap)
    snap.status = "completed"
    source = getattr(ec2_snap.volume, "snapshot_id", None)
    # 14. A volume with data of its own.
    vol_id = getattr(ec2_snap.volume, "id", None)
    content = ec2_snap.__dict__.get("_pv2hvm_content")
    if content is None and vol_id:
        content = backend.ec2_backend.tags.get(vol_id, {}).get("moto:content")
    if content:
        source = content
    if source:
        snap.source = source
    backend.snapshots[snapshot_id] = snap
    return snap


def _blocks(backend, snap, depth=0):
    """Every block a snapshot holds, its own over its parent's (or its volume's source's)."""
    if depth > 64:
        return {}
    out = {}
    ancestor = snap.parent or snap.source
    if ancestor:
        out.update(_blocks(backend, _ebs_snapshot(backend, ancestor), depth + 1))
    out.update(snap.blocks)
    return out


_tokens = {}


def start_snapshot(self, volume_size, tags, description, parent_snapshot_id=None, client_token=None,
                   encrypted=False, kms_key_arn=None):
    _wait()
    if client_token and client_token in _tokens:
        return self.snapshots[_tokens[client_token]]
    if parent_snapshot_id and encrypted:
        raise ValidationException("Encrypted cannot be specified with ParentSnapshotId")
    if parent_snapshot_id:
        parent = _ebs_snapshot(self, parent_snapshot_id)
        if volume_size < parent.volume_size:
            raise ValidationException("VolumeSize is smaller than the parent snapshot's")
    zone_name = f"{self.region_name}a"
    vol = self.ec2_backend.create_volume(size=volume_size, zone_name=zone_name)
    snapshot = self.ec2_backend.create_snapshot(volume_id=vol.id, description=description)
    if parent_snapshot_id:
        snapshot.encrypted = self.ec2_backend.snapshots[parent_snapshot_id].encrypted
        snapshot.kms_key_id = self.ec2_backend.snapshots[parent_snapshot_id].kms_key_id
    elif encrypted:
        snapshot.encrypted = True
        snapshot.kms_key_id = kms_key_arn
    if tags:
        snapshot.add_tags({tag["Key"]: tag["Value"] for tag in tags})
    snapshot.status = "pending"
    ebs_snapshot = ebs_models.EBSSnapshot(account_id=self.account_id, snapshot=snapshot)
    ebs_snapshot.parent = parent_snapshot_id
    self.snapshots[ebs_snapshot.snapshot_id] = ebs_snapshot
    if client_token:
        _tokens[client_token] = ebs_snapshot.snapshot_id
    return ebs_snapshot


def complete_snapshot(self, snapshot_id):
    _wait()
    snap = _ebs_snapshot(self, snapshot_id)
    snap.status = "completed"
    self.ec2_backend.snapshots[snapshot_id].status = "completed"
    return "completed"


def put_snapshot_block(self, snapshot_id, block_index, block_data, checksum, checksum_algorithm, data_length):
    _wait()
    _log_call("put")
    _maybe_fail("put", f"{snapshot_id} {block_index}")
    snap = _ebs_snapshot(self, snapshot_id)
    if snap.status != "pending":
        raise ValidationException(f"The snapshot '{snapshot_id}' is not pending")
    if isinstance(block_data, str):
        block_data = block_data.encode("latin-1")
    if len(block_data) != BLOCK or (data_length is not None and int(data_length) != BLOCK):
        raise ValidationException(f"block {block_index}: {len(block_data)} bytes, expected {BLOCK}")
    digest = base64.b64encode(hashlib.sha256(block_data).digest()).decode()
    if checksum_algorithm != "SHA256" or checksum != digest:
        raise ValidationException(f"block {block_index}: the checksum does not match the data")
    snap.put_block(int(block_index), block_data, checksum, checksum_algorithm, data_length)
    return checksum, checksum_algorithm


def get_snapshot_block(self, snapshot_id, block_index):
    _wait()
    _maybe_fail("get", f"{snapshot_id} {block_index}")
    snap = _ebs_snapshot(self, snapshot_id)
    block = _blocks(self, snap).get(int(block_index))
    if block is None:
        raise ValidationException(f"block {block_index} of '{snapshot_id}' does not exist")
    if block.checksum is None:
        block.checksum = base64.b64encode(hashlib.sha256(block.block_data).digest()).decode()
        block.checksum_algorithm = "SHA256"
        block.data_length = len(block.block_data)
    return block


class _View:
    """A snapshot as ListSnapshotBlocks sees it: its blocks with its ancestors'."""

    def __init__(self, snap, blocks):
        self.volume_size = snap.volume_size
        self.block_size = snap.block_size
        self.blocks = blocks


def list_snapshot_blocks(self, snapshot_id):
    _wait()
    snap = _ebs_snapshot(self, snapshot_id)
    return _View(snap, dict(sorted(_blocks(self, snap).items())))


def list_changed_blocks(self, first_snapshot_id, second_snapshot_id):
    _wait()
    first = _ebs_snapshot(self, first_snapshot_id)
    second = _ebs_snapshot(self, second_snapshot_id)
    a, b = _blocks(self, first), _blocks(self, second)
    changed = {}
    for idx in sorted(set(a) | set(b)):
        x, y = a.get(idx), b.get(idx)
        if x is None or y is None or x.block_data != y.block_data:
            changed[idx] = (x.block_token if x else None, y.block_token if y else None)
    return changed, second


B = ebs_models.EBSBackend
B.start_snapshot = start_snapshot
B.complete_snapshot = complete_snapshot
B.put_snapshot_block = put_snapshot_block
B.get_snapshot_block = get_snapshot_block
B.list_snapshot_blocks = list_snapshot_blocks
B.list_changed_blocks = list_changed_blocks

_orig_start_response = ebs_responses.EBSResponse.start_snapshot


def _start_snapshot_response(self):
    snapshot = self.ebs_backend.start_snapshot(
        volume_size=self._get_param("VolumeSize"),
        tags=self._get_param("Tags"),
        description=self._get_param("Description"),
        parent_snapshot_id=self._get_param("ParentSnapshotId"),
        client_token=self._get_param("ClientToken"),
        encrypted=self._get_param("Encrypted") or False,
        kms_key_arn=self._get_param("KmsKeyArn"),
    )
    from moto.core.responses import ActionResult

    return ActionResult({
        "SnapshotId": snapshot.snapshot_id,
        "OwnerId": snapshot.account_id,
        "Status": snapshot.status,
        "StartTime": snapshot.start_time,
        "VolumeSize": snapshot.volume_size,
        "BlockSize": snapshot.block_size,
        "Tags": snapshot.tags,
        "Description": snapshot.description,
        "ParentSnapshotId": snapshot.parent,
    })


ebs_responses.EBSResponse.start_snapshot = _start_snapshot_response


# 7. RegisterImage keeps what it is given.
def _register_image_response(self):
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    _log_call("register")
    delay = float(os.environ.get("PV2HVM_MOTO_REGISTER_DELAY", "0") or 0)
    if delay:
        import time

        time.sleep(delay)
    # 12. Unique names.
    from moto.ec2.exceptions import EC2ClientError

    name = self._get_param("Name")
    for other in list(self.ec2_backend.amis.values()):
        if other.name == name and other.owner_id == self.current_account:
            raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {other.id}")
    image = self.ec2_backend.register_image(self._get_param("Name"), self._get_param("Description", ""))
    mappings = []
    for m in self._get_param("BlockDeviceMappings", []) or []:
        mapping = {"DeviceName": m.get("DeviceName")}
        if m.get("VirtualName"):
            mapping["VirtualName"] = m["VirtualName"]
        if m.get("NoDevice") is not None:
            mapping["NoDevice"] = ""
        if m.get("Ebs"):
            ebs = dict(m["Ebs"])
            snap = ebs.get("SnapshotId")
            if snap and "VolumeSize" not in ebs:
                ebs["VolumeSize"] = self.ec2_backend.snapshots[snap].volume.size
            for k in ("DeleteOnTermination", "Encrypted"):
                if k in ebs:
                    ebs[k] = str(ebs[k]).lower() == "true"
            if "VolumeSize" in ebs:
                ebs["VolumeSize"] = int(ebs["VolumeSize"])
            mapping["Ebs"] = ebs
        mappings.append(mapping)
    image._pv2hvm_mappings = mappings
    image.root_device_name = self._get_param("RootDeviceName", image.root_device_name)
    image.root_device_type = "ebs"
    image.virtualization_type = self._get_param("VirtualizationType", "paravirtual")
    image.architecture = self._get_param("Architecture", "x86_64")
    image.kernel_id = self._get_param("KernelId")
    image.ramdisk_id = self._get_param("RamdiskId")
    image.ena_support = str(self._get_param("EnaSupport", False)).lower() == "true"
    image.sriov_net_support = self._get_param("SriovNetSupport")
    image.sriov = image.sriov_net_support
    image.boot_mode = self._get_param("BootMode")
    tags = self._parse_tag_specification().get("image", {})
    if tags:
        image.add_tags(tags)
    # 10. Test-only variants.
    if tags.get("moto:platform"):
        image.platform = tags["moto:platform"]
    if tags.get("moto:product-code"):
        image.product_codes = {tags["moto:product-code"]}
    if tags.get("moto:root-device-type"):
        image.root_device_type = tags["moto:root-device-type"]
    return ActionResult({"ImageId": image.id})


ec2_amis_responses.AmisResponse.register_image = _register_image_response

_orig_bdm = ec2_amis.Ami.block_device_mappings


def _block_device_mappings(self):
    mine = self.__dict__.get("_pv2hvm_mappings")
    return mine if mine is not None else _orig_bdm.fget(self)


ec2_amis.Ami.block_device_mappings = property(_block_device_mappings)

_orig_copy_image = ec2_amis.AmiBackend.copy_image


def _copy_image(self, source_image_id, source_region, name=None, description=None):
    ami = _orig_copy_image(self, source_image_id, source_region, name, description)
    from moto.ec2.models import ec2_backends

    src = ec2_backends[self.account_id][source_region].amis[source_image_id]
    for attr in ("_pv2hvm_mappings", "root_device_name", "ena_support", "sriov_net_support", "boot_mode"):
        if attr in src.__dict__:
            setattr(ami, attr, getattr(src, attr))
    return ami


ec2_amis.AmiBackend.copy_image = _copy_image


# 8. Instances get their image's volumes.
_orig_setup_defaults = ec2_instances.Instance.setup_defaults


def _setup_defaults(self):
    image = self.ec2_backend.amis.get(self.image_id)
    if image is not None:
        # 10. Test-only variants reach the instance.
        if image.product_codes:
            self.product_codes = [{"ProductCodeId": c, "ProductCodeType": "marketplace"} for c in image.product_codes]
        if image.root_device_type == "instance-store":
            self.root_device_type = "instance-store"
    mappings = image.__dict__.get("_pv2hvm_mappings") if image else None
    if not mappings:
        return _orig_setup_defaults(self)
    for m in mappings:
        ebs = m.get("Ebs")
        if not ebs:
            continue
        snap = ebs.get("SnapshotId")
        size = ebs.get("VolumeSize") or self.ec2_backend.snapshots[snap].volume.size
        self.add_block_device(int(size), m["DeviceName"], snap, False, True, None, ebs.get("VolumeType"))


ec2_instances.Instance.setup_defaults = _setup_defaults

# 14. A snapshot holds what its volume held when it was taken.
_orig_ec2_create_snapshot = ec2_ebs.EBSBackend.create_snapshot


def _ec2_create_snapshot(self, volume_id, *args, **kwargs):
    snap = _orig_ec2_create_snapshot(self, volume_id, *args, **kwargs)
    snap._pv2hvm_content = self.tags.get(volume_id, {}).get("moto:content", "")
    return snap


ec2_ebs.EBSBackend.create_snapshot = _ec2_create_snapshot
