"""Checks pv2hvm's deploy/ documents (run by tests/deploy.rs with the deploy-check venv of
tests/deploy-requirements.txt, made by scripts/lib.sh's deploy_python):

    deploy_check.py ROOT              check the documents under ROOT/deploy; exit 1 on a problem
    deploy_check.py ROOT --self-test  check that each check catches a broken copy of them

- the Kubernetes manifests with `kubernetes-validate --strict`, for the oldest and the newest
  Kubernetes version the README names ("Kubernetes X.Y to X.Z");
- the AWS Batch files with botocore's ParamValidator, against the RegisterJobDefinition and
  SubmitJob input shapes;
- what neither can: an array of 2 to 10,000 children; PV2HVM_SHARDS set once, next to the
  array size and equal to it (Batch), and equal to `completions` and `parallelism`
  (Kubernetes); retryStrategy.attempts = backoffLimitPerIndex + 1 (the same tries per shard);
  the exit codes the files map (evaluateOnExit, podFailurePolicy) equal to those pv2hvm
  documents (src/fleet/mod.rs's `exit` and the README's table); one run id for every shard;
  an EFS storage class, an ephemeral-storage request, a namespace the README's trust policy
  names.
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile

import botocore.session
import yaml
from botocore.validate import ParamValidator

K8S = "deploy/kubernetes/fleet-job.yaml"
JOBDEF = "deploy/aws-batch/job-definition.json"
SUBMIT = "deploy/aws-batch/submit-job.json"


def read(root, rel):
    with open(os.path.join(root, rel)) as f:
        return f.read()


def load(root):
    return {
        "k8s": [d for d in yaml.safe_load_all(read(root, K8S)) if d],
        "jobdef": json.loads(read(root, JOBDEF)),
        "submit": json.loads(read(root, SUBMIT)),
        "readme": read(root, "README.md"),
        "codes": exit_codes(read(root, "src/fleet/mod.rs")),
    }


def exit_codes(mod_rs):
    """pv2hvm's fleet exit codes: {"REFUSED": 9, …} from `pub const NAME: u8 = N;`."""
    block = mod_rs[mod_rs.index("pub mod exit"):]
    codes = {m[0]: int(m[1]) for m in re.findall(r"pub const (\w+): u8 = (\d+);", block)}
    for name in ("REFUSED", "RETRY", "BUSY"):
        assert name in codes, f"src/fleet/mod.rs: no exit::{name}"
    return codes


# pv2hvm's own exit code for refused input or configuration (README table), which no retry fixes.
REFUSED_INPUT = 3


def k8s_versions(readme):
    m = re.search(r"Kubernetes (1\.\d+) to (1\.\d+)", readme)
    return (m[1], m[2]) if m else None


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def job_of(docs):
    jobs = [d for d in docs["k8s"] if d.get("kind") == "Job"]
    return jobs[0] if len(jobs) == 1 else None


def kubernetes_validate(docs, problems):
    versions = k8s_versions(docs["readme"])
    if not versions:
        problems.append("README: no 'Kubernetes X.Y to X.Z' naming the versions supported")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs["k8s"], f)
        path = f.name
    try:
        tool = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
        for v in versions:
            r = subprocess.run([tool, "--strict", "--quiet", "-k", v, path], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{K8S}: kubernetes-validate --strict -k {v}: {(r.stdout + r.stderr).strip()}")
    finally:
        os.remove(path)


def batch_validate(docs, problems):
    model = botocore.session.get_session().get_service_model("batch")
    v = ParamValidator()
    for rel, key, op in ((JOBDEF, "jobdef", "RegisterJobDefinition"), (SUBMIT, "submit", "SubmitJob")):
        report = v.validate(docs[key], model.operation_model(op).input_shape)
        if report.has_errors():
            problems.append(f"{rel}: not a valid {op} input: {report.generate_report()}")


def consistency(docs, problems):
    codes = docs["codes"]
    readme = docs["readme"]
    for name, code in codes.items():
        if f"| {code} |" not in readme:
            problems.append(f"README: the exit code table lacks {code} (exit::{name})")

    # AWS Batch.
    size = docs["submit"].get("arrayProperties", {}).get("size")
    if not isinstance(size, int) or not 2 <= size <= 10000:
        problems.append(f"{SUBMIT}: arrayProperties.size {size!r} is not 2 to 10,000 (an array job's limits)")
    defined = [e for e in docs["jobdef"].get("containerProperties", {}).get("environment", [])]
    if any(e.get("name") == "PV2HVM_SHARDS" for e in defined):
        problems.append(f"{JOBDEF}: sets PV2HVM_SHARDS: set it once, in {SUBMIT} beside the array size")
    overrides = docs["submit"].get("containerOverrides", {}).get("environment", [])
    shards = [e.get("value") for e in overrides if e.get("name") == "PV2HVM_SHARDS"]
    if len(shards) != 1:
        problems.append(f"{SUBMIT}: containerOverrides.environment sets PV2HVM_SHARDS {len(shards)} times, not once")
    elif shards[0] != str(size):
        problems.append(f"{SUBMIT}: PV2HVM_SHARDS={shards[0]} but the array has {size} children")
    retry = docs["jobdef"].get("retryStrategy", {})
    attempts = retry.get("attempts")
    actions = {e.get("onExitCode"): e.get("action") for e in retry.get("evaluateOnExit", [])}
    want = {
        str(codes["REFUSED"]): "EXIT",
        str(REFUSED_INPUT): "EXIT",
        str(codes["RETRY"]): "RETRY",
        str(codes["BUSY"]): "RETRY",
    }
    for code, action in want.items():
        if actions.get(code) != action:
            problems.append(f"{JOBDEF}: evaluateOnExit maps exit {code} to {actions.get(code)}, not {action}")
    for code in actions:
        if code not in want:
            problems.append(f"{JOBDEF}: evaluateOnExit maps exit {code}, which pv2hvm does not document")
    cmd = docs["jobdef"].get("containerProperties", {}).get("command", [])
    if "--shard" in cmd or "--run-id" in cmd:
        problems.append(f"{JOBDEF}: the command sets --shard or --run-id: each child takes them from AWS Batch")

    # Kubernetes.
    job = job_of(docs)
    if job is None:
        problems.append(f"{K8S}: not exactly one Job")
        return
    spec = job.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    containers = pod.get("containers", [])
    c = containers[0] if containers else {}
    env = env_of(c)
    n = env.get("PV2HVM_SHARDS", {}).get("value")
    if spec.get("completionMode") != "Indexed":
        problems.append(f"{K8S}: the Job is not Indexed")
    for key in ("completions", "parallelism"):
        if str(spec.get(key)) != str(n):
            problems.append(f"{K8S}: {key} {spec.get(key)} but PV2HVM_SHARDS={n}")
    if "backoffLimitPerIndex" not in spec or attempts != spec["backoffLimitPerIndex"] + 1:
        problems.append(
            f"{K8S}: backoffLimitPerIndex {spec.get('backoffLimitPerIndex')} is not {JOBDEF}'s "
            f"retryStrategy.attempts {attempts} - 1 (the tries of one shard must agree)"
        )
    if spec.get("podReplacementPolicy") != "Failed":
        problems.append(f"{K8S}: podReplacementPolicy is not Failed: a replacement could run beside its pod")
    for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if not isinstance(spec.get(key), int):
            problems.append(f"{K8S}: no {key}")
    fail_index = set()
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        on = rule.get("onExitCodes")
        if rule.get("action") == "FailIndex" and on and on.get("operator") == "In":
            if on.get("containerName") != c.get("name"):
                problems.append(f"{K8S}: a FailIndex rule names container {on.get('containerName')}")
            fail_index |= set(on.get("values", []))
    if fail_index != {codes["REFUSED"], REFUSED_INPUT}:
        problems.append(
            f"{K8S}: podFailurePolicy fails an index on exit codes {sorted(fail_index)}, "
            f"not {sorted({codes['REFUSED'], REFUSED_INPUT})}"
        )
    run_id = env.get("PV2HVM_RUN_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
    if not run_id.startswith("metadata.labels['batch.kubernetes.io/"):
        problems.append(f"{K8S}: PV2HVM_RUN_ID does not come from the Job's label (one run id for every shard)")
    cmd = c.get("command", [])
    if "--shard" in cmd or "--run-id" in cmd:
        problems.append(f"{K8S}: the command sets --shard or --run-id: each pod takes them from the Job")
    requests = c.get("resources", {}).get("requests", {})
    if "ephemeral-storage" not in requests or "ephemeral-storage" not in c.get("resources", {}).get("limits", {}):
        problems.append(f"{K8S}: no ephemeral-storage request and limit for the emptyDir work volume")
    ns = {d.get("metadata", {}).get("namespace") for d in docs["k8s"] if d.get("kind") != "Namespace"}
    if len(ns) != 1 or None in ns:
        problems.append(f"{K8S}: the namespaced objects are not all in one namespace: {ns}")
    else:
        (namespace,) = ns
        sa = pod.get("serviceAccountName")
        subject = f"system:serviceaccount:{namespace}:{sa}"
        if subject not in readme:
            problems.append(f"README: the IRSA trust policy does not name {subject}")
    for d in docs["k8s"]:
        if d.get("kind") == "PersistentVolumeClaim" and "ReadWriteMany" in d["spec"].get("accessModes", []):
            if not d["spec"].get("storageClassName"):
                problems.append(f"{K8S}: a ReadWriteMany claim without storageClassName lands on the default (EBS)")


def check(docs, schemas=True):
    problems = []
    if schemas:
        kubernetes_validate(docs, problems)
        batch_validate(docs, problems)
    consistency(docs, problems)
    return problems


def job_spec(d):
    return job_of(d)["spec"]


def container(d):
    return job_spec(d)["template"]["spec"]["containers"][0]


def set_env(c, name, value):
    for e in c["env"]:
        if e["name"] == name:
            e["value"] = value


# Each: a description, a change that breaks one rule, and whether it needs the schemas.
MUTATIONS = [
    ("an array of 1", lambda d: d["submit"]["arrayProperties"].update(size=1), False),
    ("an array of 10,001", lambda d: d["submit"]["arrayProperties"].update(size=10001), False),
    ("PV2HVM_SHARDS unlike the array size",
     lambda d: d["submit"]["containerOverrides"]["environment"][0].update(value="5"), False),
    ("PV2HVM_SHARDS also in the job definition",
     lambda d: d["jobdef"]["containerProperties"]["environment"].append({"name": "PV2HVM_SHARDS", "value": "4"}),
     False),
    ("completions unlike PV2HVM_SHARDS", lambda d: job_spec(d).update(completions=5), False),
    ("attempts unlike backoffLimitPerIndex", lambda d: job_spec(d).update(backoffLimitPerIndex=3), False),
    ("the refused code retried",
     lambda d: d["jobdef"]["retryStrategy"]["evaluateOnExit"][0].update(action="RETRY"), False),
    ("the retry code exiting",
     lambda d: d["jobdef"]["retryStrategy"]["evaluateOnExit"][2].update(action="EXIT"), False),
    ("a code pv2hvm does not document",
     lambda d: d["codes"].update(REFUSED=12), False),
    ("FailIndex on another code",
     lambda d: job_spec(d)["podFailurePolicy"]["rules"][0]["onExitCodes"].update(values=[1]), False),
    ("no podReplacementPolicy", lambda d: job_spec(d).pop("podReplacementPolicy"), False),
    ("no run id from the Job", lambda d: container(d)["env"].pop(1), False),
    ("no ephemeral-storage", lambda d: container(d)["resources"]["requests"].pop("ephemeral-storage"), False),
    ("no storage class",
     lambda d: [x["spec"].pop("storageClassName") for x in d["k8s"] if x["kind"] == "PersistentVolumeClaim"], False),
    ("another namespace than the README's",
     lambda d: [x["metadata"].update(namespace="other") for x in d["k8s"] if x["kind"] != "Namespace"], False),
    ("a Job field Kubernetes does not have", lambda d: job_spec(d).update(backoffLimitPerShard=2), True),
    ("a Batch field RegisterJobDefinition does not have", lambda d: d["jobdef"].update(retries=3), True),
    ("a SubmitJob value of the wrong type", lambda d: d["submit"]["arrayProperties"].update(size="4"), True),
]


def self_test(root):
    base = load(root)
    failures = []
    for what, breaks, schemas in MUTATIONS:
        d = copy.deepcopy(base)
        breaks(d)
        found = check(d, schemas=schemas)
        if not found:
            failures.append(what)
        print(f"broken ({what}): {found[0] if found else 'NOT CAUGHT'}")
    if failures:
        print(f"deploy check self-test: not caught: {failures}")
        return 1
    print(f"deploy check self-test: all {len(MUTATIONS)} broken copies caught")
    return 0


def main():
    root = sys.argv[1]
    if sys.argv[2:] == ["--self-test"]:
        return self_test(root)
    problems = check(load(root))
    for p in problems:
        print(p)
    if problems:
        return 1
    versions = k8s_versions(load(root)["readme"])
    print(f"deploy documents: all checks passed (Kubernetes {versions[0]} and {versions[1]}, AWS Batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
