"""What pv2hvm's AWS tests do to the local server besides running pv2hvm, with boto3:

    tool.py seed IMAGE [--encrypted | --kms-key ARN] [--data-volume] [--network]   upload IMAGE
        as a snapshot through EBS direct, register a PV AMI (aki- kernel, /dev/sda1 root, an
        ephemeral mapping) and run an instance from it; prints {"snapshot", "image",
        "instance", "volume_blocks"} as JSON. --network runs it in a subnet of a new VPC, with
        a security group of its own, a key pair and an IAM instance profile (over a role);
        their ids are in the JSON too: "subnet", "security_group", "key_name", "profile_arn"
    tool.py snapshot-volume INSTANCE   CreateSnapshot of the instance's root volume (as it is
        now, see edit-volume), waited for until completed; prints its id
    tool.py edit-volume INSTANCE IMAGE PATH TEXT…   the instance's root volume becomes IMAGE with
        its own file and each guest PATH holding TEXT (pairs); prints the blocks that differ
    tool.py apply SNAPSHOT OUT         the blocks of SNAPSHOT that differ from the snapshot OUT
        holds (OUT is a local image of it, named by --base SNAP) written into OUT
    tool.py download SNAPSHOT OUT      every block of SNAPSHOT into the sparse file OUT
    tool.py changed FIRST SECOND       ListChangedBlocks between two snapshots: a JSON list
    tool.py state [REGION]             every snapshot, image, instance and volume, as JSON
    tool.py hvm-image IMAGE            register an HVM AMI from IMAGE's snapshot; prints its id
    tool.py encryption-by-default on|off   EnableEbsEncryptionByDefault / Disable…
    tool.py public SNAPSHOT            make SNAPSHOT public (createVolumePermission group all)
    tool.py tag ID KEY=VALUE…          CreateTags on ID
    tool.py untag ID KEY…              DeleteTags on ID
    tool.py iam-user NAME POLICY       an IAM user holding only the policy in the JSON file POLICY
        (inline); prints its access key as {"id", "secret"}
    tool.py auth on|off                the server checks every later request's signature and the
        caller's IAM policy (moto's /moto-api/reset-auth), or stops checking

    tool.py fleet-seed IMAGE N [--variant V] [--name PREFIX]   one PV AMI of IMAGE and N
        instances of it named PREFIX-00…; prints {"image", "snapshot", "instances"}
    tool.py add-instances IMAGE N [--name PREFIX]   N more instances of IMAGE; prints their ids
    tool.py fake-fleet REGION PV HVM   in REGION: a PV and an HVM AMI over an empty snapshot,
        PV and HVM instances of them; prints {"pv", "hvm", "pv_image", "hvm_image"}
    tool.py bulk REGION PV IMAGES      in REGION, quickly: PV instances (in reservations of 250)
        and IMAGES PV AMIs over an empty snapshot, with an HVM AMI and an HVM instance after
        each reservation; prints {"pv", "pv_images", "hvm"}
    tool.py deploy-env FILE            the env variable names a Kubernetes or Batch file sets,
        and the command it runs, as JSON (the file parsed as YAML or JSON)

Each instance of a seeded ext2/3/4 image gets a root volume of its own: the image plus the file
/etc/pv2hvm-volume holding "volume of i-…" (its instance id), as a volume that has been written
to since launch holds more than its AMI's snapshot. The blocks that differ go up as a child of
the AMI's snapshot and the volume is tagged moto:content=SNAP (moto_patches 14).

seed --variant windows|marketplace|instance-store tags the AMI with moto_patches' test-only
`moto:*` tags, so that it and its instance look like what preflight must refuse.

The endpoint comes from AWS_ENDPOINT_URL, the region from AWS_DEFAULT_REGION.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import sys

import boto3

BLOCK = 524288


def clients(region=None):
    return boto3.client("ec2", region_name=region), boto3.client("ebs", region_name=region)


def wait_for(describe, ok, what, timeout=60):
    """Polls until the resource settles (the server completes snapshots and images a moment
    after the call, as AWS does)."""
    import time

    deadline = time.time() + timeout
    while True:
        state = describe()
        if state == ok:
            return
        if state in ("error", "failed") or time.time() > deadline:
            sys.exit(f"{what} is {state}, not {ok}")
        time.sleep(0.2)


def wait_snapshot(ec2, snap):
    wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"], "completed", snap)


def wait_image(ec2, image):
    wait_for(lambda: ec2.describe_images(ImageIds=[image])["Images"][0]["State"], "available", image)


def wait_running(ec2, ids):
    for i in ids:
        wait_for(lambda: ec2.describe_instances(InstanceIds=[i])["Reservations"][0]["Instances"][0]["State"]["Name"],
                 "running", i)


def upload(ebs, path, **start):
    size = os.path.getsize(path)
    gib = (size + (1 << 30) - 1) >> 30
    snap = ebs.start_snapshot(VolumeSize=gib, **start)["SnapshotId"]

    def put(idx):
        with open(path, "rb") as f:
            f.seek(idx * BLOCK)
            data = f.read(BLOCK).ljust(BLOCK, b"\0")
        if not any(data):
            return 0
        ebs.put_snapshot_block(
            SnapshotId=snap, BlockIndex=idx, BlockData=data, DataLength=BLOCK,
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(), ChecksumAlgorithm="SHA256")
        return 1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        count = sum(pool.map(put, range((size + BLOCK - 1) // BLOCK)))
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=count)
    wait_snapshot(boto3.client("ec2", region_name=ebs.meta.region_name), snap)
    return snap


VOLUME_FILE = "/etc/pv2hvm-volume"
_PLACEHOLDER = "volume of i-XXXXXXXXXXXXXXXXX\n"


def _is_ext(path):
    with open(path, "rb") as f:
        f.seek(1080)
        return f.read(2) == b"\x53\xef"


def _edited_image(path, edits, tmp):
    """A sparse copy of `path` in `tmp` with each guest file of `edits` replaced by its text;
    returns the copy and {block index: data} of the 512 KiB blocks that differ from `path`."""
    import subprocess

    copy = os.path.join(tmp, "volume.img")
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", path, copy], check=True)
    for guest, text in edits:
        src = os.path.join(tmp, "file")
        with open(src, "w") as f:
            f.write(text)
        subprocess.run(["debugfs", "-w", "-R", f"rm {guest}", copy], capture_output=True)
        out = subprocess.run(["debugfs", "-w", "-R", f"write {src} {guest}", copy], capture_output=True, text=True)
        if "Allocated inode" not in out.stdout + out.stderr:
            sys.exit(f"debugfs could not write {guest}: {out.stdout}{out.stderr}")
    changed = {}
    with open(copy, "rb") as a, open(path, "rb") as b:
        fd, end, at = a.fileno(), os.fstat(a.fileno()).st_size, 0
        while at < end:
            try:
                data = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            for idx in range(data // BLOCK, (hole + BLOCK - 1) // BLOCK):
                a.seek(idx * BLOCK)
                b.seek(idx * BLOCK)
                x, y = a.read(BLOCK).ljust(BLOCK, b"\0"), b.read(BLOCK).ljust(BLOCK, b"\0")
                if x != y:
                    changed[idx] = x
            at = hole
    return copy, changed


def _put_child(ec2, ebs, parent, blocks, name):
    """A snapshot of `blocks` over `parent` (EBS direct, as a child); waits for it."""
    size = ec2.describe_snapshots(SnapshotIds=[parent])["Snapshots"][0]["VolumeSize"]
    snap = ebs.start_snapshot(VolumeSize=size, ParentSnapshotId=parent,
                              Tags=[{"Key": "Name", "Value": name}])["SnapshotId"]
    for idx, data in sorted(blocks.items()):
        ebs.put_snapshot_block(
            SnapshotId=snap, BlockIndex=idx, BlockData=data, DataLength=BLOCK,
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(), ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks))
    wait_snapshot(ec2, snap)
    return snap


def _root_volume(ec2, inst):
    i = ec2.describe_instances(InstanceIds=[inst])["Reservations"][0]["Instances"][0]
    image = ec2.describe_images(ImageIds=[i["ImageId"]])["Images"][0]
    root = image["RootDeviceName"]
    vol = next(b["Ebs"]["VolumeId"] for b in i["BlockDeviceMappings"] if b["DeviceName"] == root)
    snap = next(b["Ebs"]["SnapshotId"] for b in image["BlockDeviceMappings"] if b["DeviceName"] == root)
    return vol, snap


def own_volumes(ec2, ebs, path, instances, edits=()):
    """Gives each instance's root volume its own data (see the module's docstring), with
    `edits` too; returns {instance: [block indices that differ from the image]}."""
    import tempfile

    if not _is_ext(path):
        return {i: [] for i in instances}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        _, blocks = _edited_image(path, [(VOLUME_FILE, _PLACEHOLDER)] + list(edits), tmp)
        at = [i for i, d in blocks.items() if _PLACEHOLDER.encode() in d]
        if len(at) != 1:
            sys.exit(f"the placeholder is in {len(at)} blocks")

        def own(inst):
            mine = dict(blocks)
            mine[at[0]] = blocks[at[0]].replace(_PLACEHOLDER.encode(), f"volume of {inst}\n".encode())
            vol, parent = _root_volume(ec2, inst)
            content = _put_child(ec2, ebs, parent, mine, f"volume content of {inst}")
            ec2.create_tags(Resources=[vol], Tags=[{"Key": "moto:content", "Value": content}])
            out[inst] = sorted(mine)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(own, instances))
    return out


def register_pv(ec2, snap, variant=None, name="pv-guest", settled=False):
    if not settled:
        wait_snapshot(ec2, snap)
    mappings = [
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap, "DeleteOnTermination": True}},
        {"DeviceName": "/dev/sda2", "VirtualName": "ephemeral0"},
    ]
    return ec2.register_image(
        Name=name, Description="a PV guest", Architecture="x86_64", VirtualizationType="paravirtual",
        KernelId="aki-919dcaf8", RootDeviceName="/dev/sda1", BlockDeviceMappings=mappings,
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "team", "Value": "storage"}] + VARIANTS.get(variant, [])}],
    )["ImageId"]


def run(ec2, image, count, prefix, instance_type="m1.large"):
    wait_image(ec2, image)
    ids = []
    for i in range(count):
        ids.append(ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"{prefix}-{i:02d}"}]}],
        )["Instances"][0]["InstanceId"])
    wait_running(ec2, ids)
    return ids


def fleet_seed(path, count, variant=None, prefix="fleet"):
    ec2, ebs = clients()
    snap = upload(ebs, path)
    image = register_pv(ec2, snap, variant, name=f"{prefix}-pv")
    instances = run(ec2, image, count, prefix)
    own = own_volumes(ec2, ebs, path, instances)
    print(json.dumps({"snapshot": snap, "image": image, "instances": instances, "volume_blocks": own}))


def fake_fleet(region, pv, hvm):
    ec2, ebs = clients(region)
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=0)
    wait_snapshot(ec2, snap)
    pv_image = register_pv(ec2, snap, name="fake-pv")
    hvm_image = ec2.register_image(
        Name="fake-hvm", Architecture="x86_64", VirtualizationType="hvm", RootDeviceName="/dev/xvda", EnaSupport=True,
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}])["ImageId"]
    print(json.dumps({"pv": run(ec2, pv_image, pv, f"pv-{region}"), "hvm": run(ec2, hvm_image, hvm, f"hvm-{region}", "m5.large"),
                      "pv_image": pv_image, "hvm_image": hvm_image}))


def bulk(region, pv, images):
    ec2, ebs = clients(region)
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=0)
    wait_snapshot(ec2, snap)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        pv_images = list(pool.map(lambda i: register_pv(ec2, snap, name=f"bulk-pv-{i:04d}", settled=True), range(images)))
    hvm_image = ec2.register_image(
        Name="bulk-hvm", Architecture="x86_64", VirtualizationType="hvm", RootDeviceName="/dev/xvda", EnaSupport=True,
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}])["ImageId"]
    wait_image(ec2, pv_images[0])
    wait_image(ec2, hvm_image)
    ids, hvm = [], []
    while len(ids) < pv:
        n = min(250, pv - len(ids))
        ids += [i["InstanceId"] for i in ec2.run_instances(
            ImageId=pv_images[0], MinCount=n, MaxCount=n, InstanceType="m1.small")["Instances"]]
        hvm += [i["InstanceId"] for i in ec2.run_instances(
            ImageId=hvm_image, MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"]]
    print(json.dumps({"pv": ids, "pv_images": pv_images, "hvm": hvm}))


def deploy_env(path):
    import yaml

    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    names, commands = set(), []

    def walk(node):
        if isinstance(node, dict):
            for key in ("env", "environment"):
                for e in node.get(key) or []:
                    if isinstance(e, dict) and "name" in e:
                        names.add(e["name"])
            if "command" in node and isinstance(node["command"], list):
                commands.append(node["command"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(docs)
    print(json.dumps({"docs": docs, "env": sorted(names), "commands": commands}))


def network(ec2):
    """A subnet, a security group, a key pair and an instance profile to launch into."""
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="web", Description="web servers", VpcId=vpc)["GroupId"]
    key = ec2.create_key_pair(KeyName="ops-key")["KeyName"]
    iam = boto3.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="web-role", AssumeRolePolicyDocument=json.dumps(trust))
    profile = iam.create_instance_profile(InstanceProfileName="web-profile")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="web-profile", RoleName="web-role")
    return {"subnet": subnet, "security_group": group, "key_name": key, "profile_arn": profile}


def snapshot_volume(inst):
    ec2, _ = clients()
    vol, _ = _root_volume(ec2, inst)
    snap = ec2.create_snapshot(VolumeId=vol, Description=f"a snapshot of {inst}'s root")["SnapshotId"]
    wait_snapshot(ec2, snap)
    print(snap)


def seed(path, encrypted=False, data_volume=False, variant=None, instance_type="m1.large", kms_key=None,
         with_network=False):
    ec2, ebs = clients()
    net = network(ec2) if with_network else {}
    placed = {}
    if net:
        placed = {"SubnetId": net["subnet"], "SecurityGroupIds": [net["security_group"]], "KeyName": net["key_name"],
                  "IamInstanceProfile": {"Arn": net["profile_arn"]}}
    start = {"Encrypted": True} if encrypted or kms_key else {}
    if kms_key:
        start["KmsKeyArn"] = kms_key
    snap = upload(ebs, path, Tags=[{"Key": "Name", "Value": "pv-root"}], **start)
    mappings = [
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap, "DeleteOnTermination": True}},
        {"DeviceName": "/dev/sda2", "VirtualName": "ephemeral0"},
    ]
    if data_volume:
        mappings.append({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": True}})
    image = ec2.register_image(
        Name=f"pv-guest-{snap[-8:]}", Description="a PV guest", Architecture="x86_64", VirtualizationType="paravirtual",
        KernelId="aki-919dcaf8", RootDeviceName="/dev/sda1", BlockDeviceMappings=mappings,
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "team", "Value": "storage"}] + VARIANTS.get(variant, [])}],
    )["ImageId"]
    wait_image(ec2, image)
    inst = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}], **placed,
    )["Instances"][0]["InstanceId"]
    wait_running(ec2, [inst])
    own = own_volumes(ec2, ebs, path, [inst])[inst]
    print(json.dumps({"snapshot": snap, "image": image, "instance": inst, "volume_blocks": own, **net}))


VARIANTS = {
    "windows": [{"Key": "moto:platform", "Value": "windows"}],
    "marketplace": [{"Key": "moto:product-code", "Value": "aw0evgkw8e5c1q413zgy5pjce"}],
    "instance-store": [{"Key": "moto:root-device-type", "Value": "instance-store"}],
}


def download(snap, out):
    _, ebs = clients()
    blocks, token, size = {}, None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        page = ebs.list_snapshot_blocks(SnapshotId=snap, **kw)
        size = page["VolumeSize"] << 30
        for b in page["Blocks"]:
            blocks[b["BlockIndex"]] = b["BlockToken"]
        token = page.get("NextToken")
        if not token:
            break
    with open(out, "wb") as f:
        f.truncate(size)
        for idx, tok in sorted(blocks.items()):
            r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=idx, BlockToken=tok)
            data = r["BlockData"].read()
            assert base64.b64encode(hashlib.sha256(data).digest()).decode() == r["Checksum"], idx
            f.seek(idx * BLOCK)
            f.write(data)
    print(json.dumps({"blocks": len(blocks), "size": size}))


def apply(snap, out, base):
    """Writes the blocks of `snap` that differ from `base` into `out`, a local image of `base`:
    the whole of `snap` for the price of its changed blocks."""
    _, ebs = clients()
    changed, token = {}, None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ebs.list_changed_blocks(FirstSnapshotId=base, SecondSnapshotId=snap, **kw)
        for b in page["ChangedBlocks"]:
            changed[b["BlockIndex"]] = b.get("SecondBlockToken")
        token = page.get("NextToken")
        if not token:
            break
    with open(out, "r+b") as f:
        for idx, tok in sorted(changed.items()):
            if tok is None:
                data = b"\0" * BLOCK
            else:
                r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=idx, BlockToken=tok)
                data = r["BlockData"].read()
                assert base64.b64encode(hashlib.sha256(data).digest()).decode() == r["Checksum"], idx
            f.seek(idx * BLOCK)
            f.write(data)
    print(json.dumps(sorted(changed)))


def changed(first, second):
    _, ebs = clients()
    blocks, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        out = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second, **kw)
        blocks.extend(b["BlockIndex"] for b in out["ChangedBlocks"])
        token = out.get("NextToken")
        if not token:
            break
    print(json.dumps(sorted(blocks)))


def state(region=None):
    ec2, _ = clients(region)
    snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    images = ec2.describe_images(Owners=["self"])["Images"]
    insts = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    vols = ec2.describe_volumes()["Volumes"]
    print(json.dumps({"snapshots": snaps, "images": images, "instances": insts, "volumes": vols}, default=str))


def hvm_image(image):
    ec2, _ = clients()
    src = ec2.describe_images(ImageIds=[image])["Images"][0]
    snap = src["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    wait_snapshot(ec2, snap)
    print(ec2.register_image(
        Name=f"already-hvm-{snap[-8:]}", Architecture="x86_64", VirtualizationType="hvm", RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}])["ImageId"])


def iam_user(name, policy):
    iam = boto3.client("iam")
    iam.create_user(UserName=name)
    with open(policy) as f:
        iam.put_user_policy(UserName=name, PolicyName="pv2hvm", PolicyDocument=f.read())
    key = iam.create_access_key(UserName=name)["AccessKey"]
    print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))


def auth(on):
    import urllib.request

    # moto counts requests from this call on and checks each once the count reaches the value.
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/moto-api/reset-auth"
    req = urllib.request.Request(url, data=b"0" if on else b"inf", method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req).read()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "seed":
        variant = args[args.index("--variant") + 1] if "--variant" in args else None
        ty = args[args.index("--instance-type") + 1] if "--instance-type" in args else "m1.large"
        key = args[args.index("--kms-key") + 1] if "--kms-key" in args else None
        seed(args[0], "--encrypted" in args, "--data-volume" in args, variant, ty, key, "--network" in args)
    elif cmd == "snapshot-volume":
        snapshot_volume(args[0])
    elif cmd == "download":
        download(args[0], args[1])
    elif cmd == "changed":
        changed(args[0], args[1])
    elif cmd == "state":
        state(args[0] if args else None)
    elif cmd == "fleet-seed":
        variant = args[args.index("--variant") + 1] if "--variant" in args else None
        prefix = args[args.index("--name") + 1] if "--name" in args else "fleet"
        fleet_seed(args[0], int(args[1]), variant, prefix)
    elif cmd == "add-instances":
        prefix = args[args.index("--name") + 1] if "--name" in args else "more"
        print(json.dumps(run(clients()[0], args[0], int(args[1]), prefix)))
    elif cmd == "fake-fleet":
        fake_fleet(args[0], int(args[1]), int(args[2]))
    elif cmd == "bulk":
        bulk(args[0], int(args[1]), int(args[2]))
    elif cmd == "deploy-env":
        deploy_env(args[0])
    elif cmd == "encryption-by-default":
        ec2 = clients()[0]
        (ec2.enable_ebs_encryption_by_default if args[0] == "on" else ec2.disable_ebs_encryption_by_default)()
    elif cmd == "public":
        clients()[0].modify_snapshot_attribute(
            SnapshotId=args[0], Attribute="createVolumePermission", OperationType="add", GroupNames=["all"])
    elif cmd == "tag":
        clients()[0].create_tags(Resources=[args[0]], Tags=[
            {"Key": k, "Value": v} for k, v in (a.split("=", 1) for a in args[1:])])
    elif cmd == "untag":
        clients()[0].delete_tags(Resources=[args[0]], Tags=[{"Key": k} for k in args[1:]])
    elif cmd == "iam-user":
        iam_user(args[0], args[1])
    elif cmd == "auth":
        auth(args[0] == "on")
    elif cmd == "edit-volume":
        ec2, ebs = clients()
        pairs = list(zip(args[2::2], args[3::2]))
        print(json.dumps(own_volumes(ec2, ebs, args[1], [args[0]], pairs)[args[0]]))
    elif cmd == "apply":
        apply(args[0], args[1], args[args.index("--base") + 1])
    elif cmd == "hvm-image":
        hvm_image(args[0])
    else:
        sys.exit(f"unknown command {cmd}")
