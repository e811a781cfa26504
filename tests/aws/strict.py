"""The strict mode of pv2hvm's local AWS server: where moto 5.2 is lenient, behave as AWS does.

Loaded by server.py unless PV2HVM_MOTO_LENIENT=1 (every AWS and fleet test runs strict). Each
rule names the AWS page it models. Rules refuse what AWS refuses, for every caller. The
transient faults AWS documents (S4) are dealt only to pv2hvm (its user agent is the Rust SDK's),
not to tests/aws/tool.py, which is the tests' own eye on the server.

S1. Encryption by default (EBS user guide, "Use encryption with EBS direct APIs", the table of
    outcomes): with it on, StartSnapshot with an unencrypted ParentSnapshotId is a
    ValidationException, and a snapshot started without a parent, or copied, is encrypted with
    the default key. CopySnapshot honours Encrypted and KmsKeyId (EC2 API reference,
    CopySnapshot), and the copy holds its source's blocks.
S2. Public and foreign snapshots (EBS user guide, "Accessing the contents of an EBS snapshot":
    "EBS direct APIs does not support public snapshots"; EBS API reference, StartSnapshot,
    ParentSnapshotId "must be a snapshot that you own"): List/GetSnapshotBlock and
    ListChangedBlocks of a public snapshot, and StartSnapshot on a public or foreign parent,
    are ValidationExceptions. DescribeSnapshots honours OwnerIds=self (EC2 API reference).
S3. Listings page (EBS API reference, ListSnapshotBlocks and ListChangedBlocks: MaxResults
    100-10000, "can return less blocks than MaxResults or an empty array of blocks"):
    pages are short, some empty, each with a NextToken until the end. GetSnapshotBlock needs
    the BlockToken the listing gave for that snapshot and block (ValidationException).
S4. Transients (awslabs/coldsnap issue 43 and PR 56; EC2 API reference, "Error retries"; EC2
    developer guide, "Eventual consistency"): each new snapshot's first PutSnapshotBlock is a
    ResourceNotFoundException "The snapshot does not exist" and its second a
    ValidationException "Failed to read block data"; each new StartSnapshot token's first call
    is a ConcurrentLimitExceededException; the first GetSnapshotBlock of block 0 of each
    snapshot has a body that fails its checksum; a fresh image, snapshot or instance id is
    *.NotFound to its first Describe by id and its first CreateTags. With
    PV2HVM_MOTO_FAULT_RATE=R, every call fails with probability R (throttling or a 5xx;
    GetSnapshotBlock also with a corrupted body), from a seeded generator.
S5. Asynchronous states (EBS API reference, CompleteSnapshot: "Status: pending"; EC2 user
    guide, "Snapshot lifecycle"; RegisterImage; instance lifecycle): CompleteSnapshot answers
    pending and the snapshot is completed a moment later, or error when ChangedBlocksCount is
    not the number of blocks put; CreateSnapshot and CopySnapshot start pending; nothing is
    read from a snapshot that is not completed; RegisterImage refuses a snapshot that is not
    completed; images start pending and instances pending; StopInstances of a pending
    instance is IncorrectInstanceState; a stopped instance is "stopping" a moment first, and a
    started one "pending". What pv2hvm calls when (StopInstances, CreateSnapshot with the
    state of the instance its volume is attached to, StartSnapshot with what it asked for,
    StartInstances, RegisterImage with the image and its region as the call returns) and when
    a snapshot or a stop settled are noted in the log as "call …" and "settled …" lines with
    the time.
S6. RegisterImage (EC2 API reference, RegisterImage; "Block device mappings"): a KernelId with
    VirtualizationType hvm is refused, and so are a RootDeviceName missing from the mappings
    and a VolumeSize smaller than the snapshot; PutSnapshotBlock past VolumeSize is a
    ValidationException (EBS API reference).
S7. Names and tags (EC2 API reference, RegisterImage Name; EC2 user guide, "Tag
    restrictions"): AMI names are 3-128 of A-Za-z0-9()[]./-'@_ and space
    (InvalidAMIName.Malformed); at most 50 tags, keys up to 128, values up to 256, no aws:.
S8. Instance types (EC2 user guide, "Instance types"; "Enhanced networking", ENA required):
    RunInstances of a type EC2 does not have is InvalidParameterValue; of an ENA-required
    type from an AMI without EnaSupport, InvalidParameterCombination.
"""

import base64
import hashlib
import os
import random
import re
import threading
import time

from moto.core import responses as core_responses
from moto.ebs import responses as ebs_responses
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import elastic_block_store as ec2_ebs
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ec2.responses import amis as ec2_amis_responses
from moto.ec2.responses import elastic_block_store as ebs_store_responses
from moto.ec2.responses import instances as ec2_instances_responses
from moto.ec2.responses import tags as ec2_tags_responses

import moto_patches as base

_local = threading.local()
_lock = threading.RLock()
SETTLE = float(os.environ.get("PV2HVM_MOTO_SETTLE_SECONDS", "1.0"))
_rate = float(os.environ.get("PV2HVM_MOTO_FAULT_RATE", "0") or 0)
_rng = random.Random(int(os.environ.get("PV2HVM_MOTO_SEED", "1")))
_secret = os.urandom(8).hex()
DEFAULT_KEY = "arn:aws:kms:us-east-1:123456789012:alias/aws/ebs"
_fault_log = os.environ.get("PV2HVM_MOTO_STRICT_LOG")


def _note(line):
    if _fault_log:
        with _lock, open(_fault_log, "a") as f:
            f.write(line + "\n")


# Who is calling: faults go to pv2hvm only.
_orig_setup = core_responses.BaseResponse.setup_class


def _setup_class(self, request, *args, **kwargs):
    _orig_setup(self, request, *args, **kwargs)
    ua = ""
    try:
        ua = request.headers.get("User-Agent", "") or ""
    except Exception:
        pass
    _local.pv2hvm = "aws-sdk-rust" in ua


core_responses.BaseResponse.setup_class = _setup_class


def _is_pv2hvm():
    return getattr(_local, "pv2hvm", False)


class Validation(base.ValidationException):
    pass


class _Err(base.JsonRESTError):
    def __init__(self, code, status, message):
        self.code = status
        super().__init__(code, message)


def _random_fault(op, ec2=False):
    if not _is_pv2hvm():
        return
    if op not in ("put", "get"):  # moto_patches arms those two itself, for every caller
        base._maybe_fail(op, ec2=ec2)
    if _rate <= 0:
        return
    with _lock:
        roll = _rng.random()
        kind = _rng.choice(["throttle", "5xx"])
    if roll >= _rate:
        return
    _note(f"random {op} {kind}")
    if ec2:
        raise base.ec2_error(kind)
    if kind == "throttle":
        raise base.ThrottledException()
    raise base.InternalServerException()


# --- S5: states that settle a moment later ---------------------------------------------------
# id -> (time it settles, a function that settles it)
_pending = {}


def _later(key, fn, delay=None):
    with _lock:
        _pending[key] = (time.time() + (SETTLE if delay is None else delay), fn)


def _tick():
    now = time.time()
    with _lock:
        due = [k for k, (t, _) in _pending.items() if t <= now]
        fns = [_pending.pop(k)[1] for k in due]
    for fn in fns:
        fn()


def _ec2(backend):
    return backend.ec2_backend if hasattr(backend, "ec2_backend") else backend


# --- S4: fresh ids, invisible to their first Describe / CreateTags -----------------------------
_fresh = {}


def _fresh_id(rid):
    with _lock:
        _fresh[rid] = {"describe", "tags"}


def _unseen(rid, what):
    """True once for each fresh id and call kind, for pv2hvm only."""
    if not _is_pv2hvm():
        return False
    with _lock:
        left = _fresh.get(rid)
        if left and what in left:
            left.discard(what)
            _note(f"notfound {what} {rid}")
            return True
    return False


_NOT_FOUND = {"ami": ("InvalidAMIID.NotFound", "The image id '[{}]' does not exist"),
              "snap": ("InvalidSnapshot.NotFound", "The snapshot '{}' does not exist."),
              "i": ("InvalidInstanceID.NotFound", "The instance ID '{}' does not exist")}


def _raise_not_found(rid):
    code, msg = _NOT_FOUND[rid.split("-")[0]]
    raise EC2ClientError(code, msg.format(rid))


# --- EBS direct ------------------------------------------------------------------------------
EBS = ebs_responses.EBSResponse


def _snap(self, sid):
    return base._ebs_snapshot(self.ebs_backend, sid)


def _ec2_snap(self, sid):
    return self.ebs_backend.ec2_backend.snapshots.get(sid)


def _public(ec2_snap):
    return ec2_snap is not None and "all" in getattr(ec2_snap, "create_volume_permission_groups", set())


def _readable(self, sid):
    _tick()
    snap = _snap(self, sid)
    es = _ec2_snap(self, sid)
    if _public(es):
        raise Validation(f"The snapshot '{sid}' is public: EBS direct APIs do not support public snapshots")
    if es is not None and es.status != "completed":
        raise Validation(f"The snapshot '{sid}' is not completed (state {es.status})")
    return snap


def _token(sid, idx):
    return base64.b64encode(hashlib.sha256(f"{_secret}/{sid}/{idx}".encode()).digest()[:24]).decode()


def _page(items, token, max_results):
    """One page of `items` from `token` on: at most MaxResults, often fewer, sometimes none."""
    start = int(token.split(".")[0]) if token else 0
    if max_results is not None and not 100 <= int(max_results) <= 10000:
        raise Validation("MaxResults must be between 100 and 10000")
    limit = int(max_results or 10000)
    with _lock:
        n = 0 if _rng.random() < 0.15 else _rng.randint(1, min(limit, 97))
    page = items[start:start + n]
    end = start + n
    # Tokens are opaque and new on every page, also on an empty one.
    with _lock:
        salt = _rng.getrandbits(32)
    return page, (f"{end}.{salt:08x}" if end < len(items) else None)


def _list_snapshot_blocks(self):
    sid = self._get_param("SnapshotId")
    base._wait()
    _random_fault("list")
    snap = _readable(self, sid)
    blocks = sorted(base._blocks(self.ebs_backend, snap).keys())
    page, nxt = _page(blocks, self._get_param("NextToken"), self._get_param("MaxResults"))
    result = {"Blocks": [{"BlockIndex": i, "BlockToken": _token(sid, i)} for i in page],
              "VolumeSize": snap.volume_size, "BlockSize": base.BLOCK}
    if nxt:
        result["NextToken"] = nxt
    if _is_pv2hvm():
        _note(f"page list {sid} {len(page)} of {len(blocks)}")
    return core_responses.ActionResult(result)


def _list_changed_blocks(self):
    first, second = self._get_param("FirstSnapshotId"), self._get_param("SecondSnapshotId")
    base._wait()
    _random_fault("changed")
    _readable(self, first)
    s2 = _readable(self, second)
    changed, _ = base.list_changed_blocks(self.ebs_backend, first, second)
    items = sorted(changed)
    page, nxt = _page(items, self._get_param("NextToken"), self._get_param("MaxResults"))
    result = {"ChangedBlocks": [{"BlockIndex": i, "FirstBlockToken": _token(first, i) if changed[i][0] else None,
                                 "SecondBlockToken": _token(second, i) if changed[i][1] else None} for i in page],
              "VolumeSize": s2.volume_size, "BlockSize": base.BLOCK}
    if nxt:
        result["NextToken"] = nxt
    return core_responses.ActionResult(result)


_corrupted = set()


def _get_snapshot_block(self):
    sid, idx = self._get_param("SnapshotId"), int(self._get_param("BlockIndex"))
    _random_fault("get")
    snap = _readable(self, sid)
    if self._get_param("BlockToken") != _token(sid, idx):
        raise Validation(f"The block token for block {idx} of '{sid}' is not valid")
    block = base.get_snapshot_block(self.ebs_backend, sid, idx)
    data = block.block_data
    corrupt = False
    if _is_pv2hvm():
        with _lock:
            if idx == 0 and sid not in _corrupted:
                _corrupted.add(sid)
                corrupt = True
            elif _rate > 0 and _rng.random() < _rate:
                corrupt = True
    if corrupt:
        _note(f"corrupt get {sid} {idx}")
        data = bytes([data[0] ^ 0xFF]) + data[1:]
    return core_responses.ActionResult({"DataLength": len(data), "BlockData": data,
                                        "Checksum": block.checksum, "ChecksumAlgorithm": "SHA256"})


_puts = {}


def _put_snapshot_block(self):
    sid, idx = self._get_param("SnapshotId"), int(self._get_param("BlockIndex"))
    if _is_pv2hvm():
        with _lock:
            n = _puts.get(sid, 0)
            _puts[sid] = n + 1
        if n == 0:
            _note(f"notfound put {sid}")
            raise _Err("ResourceNotFoundException", 404, "The snapshot does not exist.")
        if n == 1:
            _note(f"failed-read put {sid}")
            raise Validation("Failed to read block data")
    _random_fault("put")
    snap = _snap(self, sid)
    if idx < 0 or (idx + 1) * base.BLOCK > snap.volume_size * (1 << 30):
        raise Validation(f"Block index {idx} is past the end of the {snap.volume_size} GiB volume")
    return _orig_put(self)


_orig_put = EBS.put_snapshot_block
_started_tokens = set()
_orig_start = EBS.start_snapshot


def _start_snapshot(self):
    parent = self._get_param("ParentSnapshotId")
    token = self._get_param("ClientToken")
    if _is_pv2hvm() and token and token not in _started_tokens:
        _started_tokens.add(token)
        _note("concurrent-limit start")
        raise _Err("ConcurrentLimitExceededException", 400, "You have reached the limit for concurrent snapshots.")
    _random_fault("start")
    ec2 = self.ebs_backend.ec2_backend
    if parent:
        p = ec2.snapshots.get(parent)
        if p is None:
            raise Validation(f"The parent snapshot '{parent}' does not exist")
        if _public(p) or p.owner_id != ec2.account_id:
            raise Validation(f"The parent snapshot '{parent}' must be a snapshot you own and not public")
        if ec2.ebs_encryption_by_default and not p.encrypted:
            raise Validation("The parent snapshot is unencrypted and EBS encryption by default is enabled")
        if p.status != "completed":
            raise Validation(f"The parent snapshot '{parent}' is not completed")
    _check_tags((self._get_param("Tags") or []))
    out = _orig_start(self)
    sid = out.result["SnapshotId"]
    if _is_pv2hvm():
        _note(f"call StartSnapshot {sid} parent={parent} encrypted={self._get_param('Encrypted')} "
              f"kms={self._get_param('KmsKeyArn')} {time.time():.3f}")
    es = ec2.snapshots[sid]
    if not parent and ec2.ebs_encryption_by_default and not es.encrypted:
        es.encrypted = True
        es.kms_key_id = DEFAULT_KEY
    if es.encrypted and not es.kms_key_id:
        es.kms_key_id = DEFAULT_KEY
    return out


def _complete_snapshot(self):
    sid = self._get_param("SnapshotId")
    count = self._get_param("ChangedBlocksCount")
    base._wait()
    _random_fault("complete")
    snap = _snap(self, sid)
    es = self.ebs_backend.ec2_backend.snapshots[sid]
    if es.status != "pending":
        raise Validation(f"The snapshot '{sid}' is not pending")
    final = "completed" if int(count) == len(snap.blocks) else "error"

    def settle():
        snap.status = final
        es.status = final
        if final == "error":
            es.state_message = f"ChangedBlocksCount {count} is not the {len(snap.blocks)} blocks put"

    es.status = "pending"
    _later(sid, settle)
    return core_responses.ActionResult({"Status": "pending"})


EBS.list_snapshot_blocks = _list_snapshot_blocks
EBS.list_changed_blocks = _list_changed_blocks
EBS.get_snapshot_block = _get_snapshot_block
EBS.put_snapshot_block = _put_snapshot_block
EBS.start_snapshot = _start_snapshot
EBS.complete_snapshot = _complete_snapshot


# Snapshot state_message is shown by DescribeSnapshots.
if not hasattr(ec2_ebs.Snapshot, "state_message"):
    ec2_ebs.Snapshot.state_message = None

# --- EC2 ---------------------------------------------------------------------------------------
SNAP = ebs_store_responses.ElasticBlockStore
_orig_create_snapshot = SNAP.create_snapshot
_orig_copy_snapshot = SNAP.copy_snapshot
_orig_describe_snapshots = SNAP.describe_snapshots


def _settle_snapshot(ec2, sid):
    def fn():
        s = ec2.snapshots.get(sid)
        if s is not None and s.status == "pending":
            s.status = "completed"
            _note(f"settled {sid} completed {time.time():.3f}")
    _later(sid, fn)


def _create_snapshot(self):
    if _is_pv2hvm():
        vid = self._get_param("VolumeId")
        vol = self.ec2_backend.volumes.get(vid)
        inst = getattr(getattr(vol, "attachment", None), "instance", None)
        state = inst._state.name if inst is not None else "-"
        _note(f"call CreateSnapshot {vid} {getattr(inst, 'id', '-')} {state} {time.time():.3f}")
    _random_fault("CreateSnapshot", ec2=True)
    _check_tag_spec(self)
    out = _orig_create_snapshot(self)
    sid = out.result["SnapshotId"] if isinstance(out.result, dict) else out.result.id
    s = self.ec2_backend.snapshots[sid]
    s.encrypted = bool(getattr(s.volume, "encrypted", False)) or s.encrypted
    s.status = "pending"
    _settle_snapshot(self.ec2_backend, sid)
    _fresh_id(sid)
    return out


def _copy_snapshot(self):
    _random_fault("CopySnapshot", ec2=True)
    _check_tag_spec(self)
    src_id = self._get_param("SourceSnapshotId")
    src = self.ec2_backend.snapshots.get(src_id)
    if src is not None and src.status != "completed":
        raise EC2ClientError("IncorrectState", f"Snapshot {src_id} is not completed")
    out = _orig_copy_snapshot(self)
    sid = out.result["SnapshotId"]
    s = self.ec2_backend.snapshots[sid]
    want = str(self._get_param("Encrypted", False)).lower() == "true"
    s.encrypted = bool(src.encrypted) or want or self.ec2_backend.ebs_encryption_by_default
    s.kms_key_id = self._get_param("KmsKeyId") or (src.kms_key_id if src.encrypted else None) or (
        DEFAULT_KEY if s.encrypted else None)
    # The copy holds the source's blocks.
    s._pv2hvm_copy_of = src_id
    s.status = "pending"
    _settle_snapshot(self.ec2_backend, sid)
    _fresh_id(sid)
    return out


def _describe_snapshots(self):
    _tick()
    _random_fault("DescribeSnapshots", ec2=True)
    for sid in self._get_param("SnapshotIds", []) or []:
        if _unseen(sid, "describe"):
            _raise_not_found(sid)
    owners = self._get_param("OwnerIds", []) or []
    out = _orig_describe_snapshots(self)
    if "self" in owners:
        account = self.ec2_backend.account_id
        out.result["Snapshots"] = [s for s in out.result["Snapshots"] if s.owner_id == account]
    return out


SNAP.create_snapshot = _create_snapshot
SNAP.copy_snapshot = _copy_snapshot
SNAP.describe_snapshots = _describe_snapshots

# The EBS view of a copy reads its source's blocks.
_orig_ebs_snapshot = base._ebs_snapshot


def _ebs_snapshot(backend, snapshot_id):
    snap = _orig_ebs_snapshot(backend, snapshot_id)
    es = backend.ec2_backend.snapshots.get(snapshot_id)
    copy_of = getattr(es, "_pv2hvm_copy_of", None) if es is not None else None
    if copy_of and snap.source is None and snap.parent is None and not snap.blocks:
        snap.source = copy_of
    return snap


base._ebs_snapshot = _ebs_snapshot

# --- S7: names and tags ------------------------------------------------------------------------
_AMI_NAME = re.compile(r"^[A-Za-z0-9()\[\]./\-'@_ ]{3,128}$")


def _check_tags(tags):
    if len(tags) > 50:
        raise EC2ClientError("TagLimitExceeded", f"{len(tags)} tags: a resource holds at most 50")
    for t in tags:
        k, v = t.get("Key", ""), t.get("Value", "") or ""
        if k.lower().startswith("aws:"):
            raise EC2ClientError("InvalidParameterValue", f"Tag keys starting with 'aws:' are reserved: {k}")
        if len(k) > 128 or len(v) > 256:
            raise EC2ClientError("InvalidParameterValue", f"Tag {k!r}: keys up to 128, values up to 256 characters")


def _check_tag_spec(self):
    for spec in self._get_param("TagSpecifications", []) or []:
        _check_tags(spec.get("Tags", []) or [])


def _check_name(name):
    if name is None or not _AMI_NAME.match(name):
        raise EC2ClientError("InvalidAMIName.Malformed", f"AMI names must be 3-128 of A-Za-z0-9()[]./-'@_ and space: {name!r}")


AMIS = ec2_amis_responses.AmisResponse
_orig_register = AMIS.register_image
_orig_copy_image = AMIS.copy_image
_orig_describe_images = AMIS.describe_images


def _settle_image(ec2, image_id):
    def fn():
        img = ec2.amis.get(image_id)
        if img is not None and img.state == "pending":
            img.state = "available"
    _later(image_id, fn)


def _register_image(self):
    _tick()
    _random_fault("RegisterImage", ec2=True)
    _check_name(self._get_param("Name"))
    _check_tag_spec(self)
    virt = self._get_param("VirtualizationType", "paravirtual")
    if virt == "hvm" and self._get_param("KernelId"):
        raise EC2ClientError("InvalidParameterCombination", "KernelId cannot be specified for an hvm image")
    root = self._get_param("RootDeviceName")
    mappings = self._get_param("BlockDeviceMappings", []) or []
    if root and not any(m.get("DeviceName") == root for m in mappings):
        raise EC2ClientError("InvalidBlockDeviceMapping", f"The root device {root} is not in the block device mappings")
    for m in mappings:
        ebs = m.get("Ebs") or {}
        sid = ebs.get("SnapshotId")
        if not sid:
            continue
        s = self.ec2_backend.snapshots.get(sid)
        if s is None:
            raise EC2ClientError("InvalidSnapshot.NotFound", f"The snapshot '{sid}' does not exist.")
        if s.status != "completed":
            raise EC2ClientError("IncorrectState", f"Snapshot '{sid}' is not 'completed' (state {s.status})")
        if "VolumeSize" in ebs and int(ebs["VolumeSize"]) < s.volume.size:
            raise EC2ClientError("InvalidBlockDeviceMapping",
                                 f"Volume of size {ebs['VolumeSize']} is smaller than snapshot '{sid}', expect size >= {s.volume.size}")
    out = _orig_register(self)
    image_id = out.result["ImageId"]
    if _is_pv2hvm():
        _note(f"call RegisterImage {image_id} {self.ec2_backend.region_name} {time.time():.3f}")
    self.ec2_backend.amis[image_id].state = "pending"
    _settle_image(self.ec2_backend, image_id)
    _fresh_id(image_id)
    return out


def _copy_image(self):
    _random_fault("CopyImage", ec2=True)
    _check_name(self._get_param("Name"))
    _check_tag_spec(self)
    out = _orig_copy_image(self)
    image_id = out.result["ImageId"]
    self.ec2_backend.amis[image_id].state = "pending"
    _settle_image(self.ec2_backend, image_id)
    _fresh_id(image_id)
    return out


def _describe_images(self):
    _tick()
    _random_fault("DescribeImages", ec2=True)
    for iid in self._get_param("ImageIds", []) or []:
        if _unseen(iid, "describe"):
            _raise_not_found(iid)
    return _orig_describe_images(self)


AMIS.register_image = _register_image
AMIS.copy_image = _copy_image
AMIS.describe_images = _describe_images

# --- S5, S8: instances -------------------------------------------------------------------------
INST = ec2_instances_responses.InstanceResponse
_orig_run = INST.run_instances
_orig_stop = INST.stop_instances
_orig_start_instances = INST.start_instances
_orig_describe_instances = INST.describe_instances


def _run_instances(self):
    _tick()
    _random_fault("RunInstances", ec2=True)
    _check_tag_spec(self)
    ty = self._get_param("InstanceType", "m1.small")
    info = INSTANCE_TYPES.get(ty)
    if info is None:
        raise EC2ClientError("InvalidParameterValue", f"Invalid value '{ty}' for InstanceType.")
    image = self.ec2_backend.amis.get(self._get_param("ImageId"))
    if image is not None and info.get("NetworkInfo", {}).get("EnaSupport") == "required" and not getattr(image, "ena_support", False):
        raise EC2ClientError("InvalidParameterCombination",
                             f"Enhanced networking with the Elastic Network Adapter (ENA) is required for the '{ty}' instance type. "
                             "Ensure that you are using an AMI that is enabled for ENA.")
    if image is not None and getattr(image, "state", "available") != "available":
        raise EC2ClientError("IncorrectState", f"The image '{image.id}' is not available (state {image.state})")
    out = _orig_run(self)
    for inst in out.result.instances:
        inst._state.name = "pending"
        inst._state.code = 0

        def settle(inst=inst):
            if inst._state.name == "pending":
                inst._state.name = "running"
                inst._state.code = 16
        _later(inst.id, settle)
        _fresh_id(inst.id)
    return out


def _stop_instances(self):
    _tick()
    _random_fault("StopInstances", ec2=True)
    ids = self._get_param("InstanceIds", []) or []
    for iid in ids:
        inst = self.ec2_backend.get_instance(iid)
        if inst._state.name == "pending":
            raise EC2ClientError("IncorrectInstanceState", f"The instance '{iid}' is not in a state from which it can be stopped.")
    out = _orig_stop(self)
    # Stopping takes a while: "stopping", then "stopped".
    for iid in ids:
        inst = self.ec2_backend.get_instance(iid)
        inst._state.name, inst._state.code = "stopping", 64
        if _is_pv2hvm():
            _note(f"call StopInstances {iid} {time.time():.3f}")

        def settle(inst=inst):
            if inst._state.name == "stopping":
                inst._state.name, inst._state.code = "stopped", 80
                _note(f"settled {inst.id} stopped {time.time():.3f}")
        _later(inst.id, settle)
    return out


def _start_instances(self):
    _tick()
    _random_fault("StartInstances", ec2=True)
    ids = self._get_param("InstanceIds", []) or []
    for iid in ids:
        inst = self.ec2_backend.get_instance(iid)
        if inst._state.name not in ("stopped", "running", "pending"):
            raise EC2ClientError("IncorrectInstanceState", f"The instance '{iid}' is not in a state from which it can be started.")
    out = _orig_start_instances(self)
    for iid in ids:
        inst = self.ec2_backend.get_instance(iid)
        if _is_pv2hvm():
            _note(f"call StartInstances {iid} {time.time():.3f}")
        inst._state.name, inst._state.code = "pending", 0

        def settle(inst=inst):
            if inst._state.name == "pending":
                inst._state.name, inst._state.code = "running", 16
        _later(inst.id, settle)
    return out


def _describe_instances(self):
    _tick()
    _random_fault("DescribeInstances", ec2=True)
    for iid in self._get_param("InstanceIds", []) or []:
        if _unseen(iid, "describe"):
            _raise_not_found(iid)
    return _orig_describe_instances(self)


INST.run_instances = _run_instances
INST.stop_instances = _stop_instances
INST.start_instances = _start_instances
INST.describe_instances = _describe_instances

TAGS = ec2_tags_responses.TagResponse
_orig_create_tags = TAGS.create_tags


def _create_tags(self):
    _random_fault("CreateTags", ec2=True)
    for rid in self._get_param("Resources", []) or []:
        if _unseen(rid, "tags"):
            _raise_not_found(rid)
    _check_tags(self._get_param("Tags", []) or [])
    return _orig_create_tags(self)


TAGS.create_tags = _create_tags

# S9-S11: AMI copies, snapshot deletion, regions.
import strict_copies  # noqa: E402,F401
# S12: DescribeInstances and DescribeImages page as EC2 pages them.
import strict_listings  # noqa: E402,F401
