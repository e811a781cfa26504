//! `inspect` and `plan` over the fixtures, checked field by field; the plan's JSON schema;
//! plans that write nothing; saved plans and drift.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn inspect(src: &Path) -> Value {
    let out = run_ok(pv2hvm().arg("inspect").arg(src).args(["--format", "json"]));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn plan(src: &Path, extra: &[&str]) -> Value {
    let out = run_ok(pv2hvm().arg("plan").arg(src).args(["--format", "json"]).args(extra));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn driver(kernel: &Value, name: &str) -> String {
    kernel["drivers"].as_array().unwrap().iter().find(|d| d["name"] == name).unwrap()["state"].as_str().unwrap().into()
}

/// A minimal JSON Schema check: type, const, enum, required, properties (closed by
/// `additionalProperties: false`) and items.
fn validate(schema: &Value, v: &Value, at: &str) {
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => panic!("bad schema type at {at}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        assert!(ok, "{at}: {v} is not {types:?}");
    }
    if let Some(c) = schema.get("const") {
        assert_eq!(v, c, "{at}");
    }
    if let Some(e) = schema.get("enum") {
        assert!(e.as_array().unwrap().contains(v), "{at}: {v} not in {e}");
    }
    for r in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter(|_| v.is_object()) {
        assert!(v.get(r.as_str().unwrap()).is_some(), "{at}: missing {r}");
    }
    if let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), v.as_object()) {
        for (k, s) in props {
            if let Some(x) = obj.get(k) {
                validate(s, x, &format!("{at}/{k}"));
            }
        }
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            for k in obj.keys() {
                assert!(props.contains_key(k), "{at}: {k} is not in the schema");
            }
        }
    } else if v.is_object() {
        assert!(
            schema.get("type") != Some(&Value::String("object".into())),
            "{at}: an object without properties in the schema"
        );
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, x, &format!("{at}/{i}"));
        }
    }
}

#[test]
fn inspect_cloud_fixture() {
    let src = fixture_cloud();
    let r = inspect(&src);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["disk"]["shape"], "unpartitioned");
    let fs = &r["disk"]["fs"];
    assert_eq!(fs["fs_type"], "ext4");
    assert_eq!(fs["label"], "pv-root");
    assert_eq!(fs["needs_recovery"], false);
    assert_eq!(fs["blocks"].as_u64().unwrap() * fs["block_size"].as_u64().unwrap(), 2 << 30);
    assert!(fs["features"].as_array().unwrap().contains(&"has_journal".into()));
    assert_eq!(r["os"]["distro"], "debian");
    assert_eq!(r["os"]["version"], "12");
    assert_eq!(r["os"]["family"], "debian");
    assert_eq!(r["os"]["init_system"], "systemd");
    assert_eq!(r["os"]["selinux"], "absent");
    assert_eq!(r["playbook"], "debian-8-12");
    let k = &r["kernels"][0];
    assert!(k["version"].as_str().unwrap().ends_with("-cloud-amd64"));
    assert_eq!(r["default_kernel"], k["version"]);
    assert_eq!(k["pvhvm"], true);
    assert_eq!(k["initramfs"]["generator"], "initramfs-tools");
    assert_eq!(k["initramfs"]["compression"], "gzip");
    assert!(k["initramfs"]["modules"].as_array().unwrap().contains(&"xen_blkfront".into()));
    assert_eq!(driver(k, "nvme"), "built-in");
    assert_eq!(driver(k, "xen-blkfront"), "initramfs");
    assert_eq!(driver(k, "xen-netfront"), "rootfs");
    assert_eq!(driver(k, "ena"), "rootfs");
    assert_eq!(driver(k, "ixgbevf"), "rootfs");
    let b = &r["bootloader"];
    assert_eq!(b["path"], "/boot/grub/menu.lst");
    assert_eq!(b["dialect"], "legacy");
    assert_eq!(b["entries"][0]["root"], "/dev/xvda1");
    assert_eq!(b["entries"][0]["console"], serde_json::json!(["hvc0"]));
    assert_eq!(r["fstab"][0]["spec"], "/dev/xvda1");
    assert!(r["fstab"][0]["resolves"].as_str().unwrap().starts_with("the root filesystem: becomes UUID="));
    assert_eq!(r["console"]["kernel_consoles"], serde_json::json!(["hvc0"]));
    assert_eq!(r["verdicts"]["xen_hvm"]["possible"], true);
    assert_eq!(r["verdicts"]["nitro"]["possible"], true);
    // Cheap: at most 2% of the allocated blocks are read.
    let used = r["used_blocks"].as_u64().unwrap() * fs["block_size"].as_u64().unwrap();
    let read = r["bytes_read"].as_u64().unwrap();
    assert!(read * 50 <= used, "inspect read {read} bytes of {used} allocated");
}

#[test]
fn inspect_generic_fixture_nvme_is_a_module_missing_from_the_initramfs() {
    let r = inspect(&fixture_generic());
    let k = &r["kernels"][0];
    assert_eq!(k["initramfs"]["generator"], "dracut");
    assert_eq!(k["initramfs"]["compression"], "xz");
    assert_eq!(driver(k, "nvme"), "rootfs");
    assert_eq!(driver(k, "ata_piix"), "rootfs");
    assert_eq!(driver(k, "xen-blkfront"), "initramfs");
    assert!(!k["initramfs"]["modules"].as_array().unwrap().contains(&"nvme".into()));
    assert_eq!(r["verdicts"]["nitro"]["possible"], true, "conversion injects nvme: possible after conversion");
}

#[test]
fn inspect_ext3_label_dracut_fixture() {
    let r = inspect(&fixture_ext3());
    assert_eq!(r["disk"]["fs"]["fs_type"], "ext3");
    assert_eq!(r["disk"]["fs"]["label"], "rootfs");
    assert!(!r["disk"]["fs"]["features"].as_array().unwrap().contains(&"extent".into()));
    assert_eq!(r["fstab"][0]["spec"], "LABEL=rootfs");
    assert_eq!(r["fstab"][0]["fstype"], "ext3");
    assert_eq!(r["fstab"][0]["resolves"], "the root filesystem: unchanged");
    assert_eq!(r["bootloader"]["entries"][0]["root"], "LABEL=rootfs");
    assert_eq!(r["kernels"][0]["initramfs"]["generator"], "dracut");
    let p = plan(&fixture_ext3(), &[]);
    let paths: Vec<&str> = p["edits"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/boot/grub/menu.lst", "/etc/dracut.conf.d/pv2hvm.conf"], "fstab by LABEL= needs no edit");
    let map = p["device_map"].as_array().unwrap();
    assert_eq!(map.len(), 1, "{map:?}");
    assert_eq!(map[0]["pv_device"], "(root volume)");
    assert_eq!(map[0]["nitro_device"], "/dev/nvme0n1", "in place, the whole disk");
}

#[test]
fn plan_fields_schema_and_formats() {
    let schema: Value = serde_json::from_str(include_str!("../schema/plan-v1.schema.json")).unwrap();
    for src in [fixture_cloud(), fixture_generic(), fixture_ext3()] {
        let p = plan(&src, &[]);
        validate(&schema, &p, "");
    }
    let p = plan(&fixture_generic(), &["--layout", "gpt", "--size", "5"]);
    validate(&schema, &p, "");
    // The schema is deep enough to catch a mistyped or unexpected field anywhere.
    for (path, bad) in [
        ("/disk/core_lba", Value::from("one")),
        ("/initramfs/0/drivers/0/state", Value::from("somewhere")),
        ("/source_layout/fs/surprise", Value::from(1)),
        ("/device_map/0/partition", Value::Null),
    ] {
        let mut broken = p.clone();
        let (parent, key) = path.rsplit_once('/').unwrap();
        broken.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.to_string(), bad);
        let caught = std::panic::catch_unwind(|| validate(&schema, &broken, ""));
        assert!(caught.is_err(), "the schema accepts a broken {path}");
    }
    // The plan says what it read: the boot config and the initramfs among the files, each
    // with a reason, and what it read more than once.
    let files: Vec<(&str, &str)> = p["files_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["why"].as_str().unwrap()))
        .collect();
    let why = |path: &str| files.iter().find(|f| f.0 == path).map(|f| f.1).unwrap_or_else(|| panic!("{path} not read"));
    assert!(why("/boot/grub/menu.lst").starts_with("boot configuration"), "{files:?}");
    assert!(why(p["initramfs"][0]["path"].as_str().unwrap()).starts_with("initramfs"), "{files:?}");
    assert!(why("/sbin/init").starts_with("architecture"), "{files:?}");
    let reads = &p["source_reads"];
    assert!(reads["distinct_bytes"].as_u64().unwrap() <= reads["bytes"].as_u64().unwrap());
    let total: u64 = p["files_read"].as_array().unwrap().iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
    assert!(total < reads["bytes"].as_u64().unwrap(), "the files are part of what was read");
    assert_eq!(p["options"]["layout"], "gpt");
    assert_eq!(p["options"]["size_gib"], 5);
    assert_eq!(p["playbook"], "debian-8-12");
    assert_eq!(p["ami"]["architecture"], "x86_64");
    assert_eq!(p["ami"]["boot_mode"], "legacy-bios");
    assert_eq!(p["ami"]["ena_support"], true);
    assert_eq!(p["ami"]["sriov_net_support"], "simple");
    let ird = &p["initramfs"][0];
    let adds: Vec<&str> = ird["add"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let nvme = adds.iter().position(|a| a.ends_with("/nvme.ko")).expect("nvme is added");
    let core = adds.iter().position(|a| a.ends_with("/nvme-core.ko")).expect("nvme-core is added");
    assert!(core < nvme, "dependencies first: {adds:?}");
    assert!(p["edits"][0]["diff"].as_str().unwrap().contains("+kernel /boot/vmlinuz-"));
    assert!(p["edits"][0]["diff"].as_str().unwrap().contains("nvme_core.io_timeout=4294967295"));
    let p = plan(&fixture_cloud(), &["--target", "xen"]);
    assert_eq!(p["ami"]["ena_support"], false);
    assert!(!p["edits"][0]["diff"].as_str().unwrap().contains("nvme_core.io_timeout"));

    let md = stdout(&run_ok(pv2hvm().arg("plan").arg(fixture_cloud()).args(["--format", "markdown"])));
    assert!(md.starts_with("## pv2hvm plan: `"), "{md}");
    assert!(md.contains("| Nitro | ready |") && md.contains("| AMI | x86_64, hvm, legacy-bios, ENA yes"), "{md}");
    assert!(md.contains("<details><summary>File edits</summary>") && md.contains("```diff\n--- a/boot/grub/menu.lst"));
    let text = stdout(&run_ok(pv2hvm().arg("plan").arg(fixture_cloud())));
    assert!(text.contains("initramfs    /boot/initrd.img-"), "{text}");
    assert!(text.contains("loads at boot: xen-blkfront xen-netfront ena"), "{text}");
}

#[test]
fn plan_writes_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, tmp) = (dir.path().join("cwd"), dir.path().join("tmp"));
    std::fs::create_dir(&cwd).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let before = (sha256(&src), std::fs::metadata(&src).unwrap().modified().unwrap());
    for cmd in ["plan", "inspect"] {
        run_ok(pv2hvm().arg(cmd).arg(&src).current_dir(&cwd).env("TMPDIR", &tmp));
    }
    run_ok(
        pv2hvm().arg("convert").arg(&src).arg(cwd.join("x.img")).arg("--dry-run").current_dir(&cwd).env("TMPDIR", &tmp),
    );
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!((sha256(&src), std::fs::metadata(&src).unwrap().modified().unwrap()), before);
}

#[test]
fn saved_plan_drift_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let saved = dir.path().join("plan.json");
    run_ok(pv2hvm().arg("plan").arg(&src).args(["--layout", "gpt", "-o"]).arg(&saved));
    // Unchanged: the saved plan applies (dry run), with the options it recorded.
    let out = run_ok(
        pv2hvm().arg("convert").arg("--plan").arg(&saved).arg(&src).arg(dir.path().join("a.img")).arg("--dry-run"),
    );
    assert!(stdout(&out).contains("disk         gpt layout"), "{}", stdout(&out));
    // The guest changes after the review: convert refuses.
    let t = src.display().to_string();
    let fstab = guest_cat(&t, "/etc/fstab");
    guest_write(&t, "/etc/fstab", &format!("{fstab}/dev/xvdf /data ext4 defaults 0 2\n"));
    let dst = dir.path().join("hvm.img");
    let drifted = sha256(&src);
    let out = pv2hvm().arg("convert").arg("--plan").arg(&saved).arg(&src).arg(&dst).arg("-q").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(sha256(&src), drifted, "the source is unchanged");
    assert!(
        err.contains(
            "the source has drifted from the saved plan: /etc/fstab changed since the plan was made; make a new plan"
        ),
        "{err}"
    );
    assert!(!dst.exists() && !dir.path().join("hvm.img.partial").exists());
    // A plan file from elsewhere is refused clearly.
    std::fs::write(&saved, "{\"schema_version\": 9}").unwrap();
    let before = sha256(&src);
    let out = pv2hvm().arg("convert").arg("--plan").arg(&saved).arg(&src).arg(&dst).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("plan schema_version 9 is not supported"), "{err}");
    assert!(!dst.exists() && !dir.path().join("hvm.img.partial").exists());
    assert_eq!(sha256(&src), before);
}

#[test]
fn user_playbook_wins_and_adds_kernel_arguments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.toml"),
        "name = \"site\"\n[detect]\ndistro = [\"debian\"]\n[kernel_args]\nalways = [\"net.ifnames=0\"]\n",
    )
    .unwrap();
    let p = plan(&fixture_cloud(), &["--playbooks", dir.path().to_str().unwrap()]);
    assert_eq!(p["playbook"], "site");
    assert!(p["edits"][0]["diff"].as_str().unwrap().contains("net.ifnames=0"));
}

/// Saves a plan of a fresh copy of the cloud fixture, changes the copy with `change`, and
/// expects `convert --plan` to refuse naming `expect`, leaving the copy as it was.
fn drift(change: impl Fn(&std::path::Path, &std::path::Path), expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let saved = dir.path().join("plan.json");
    run_ok(pv2hvm().arg("plan").arg(&src).arg("-o").arg(&saved));
    change(&src, &saved);
    let before = sha256(&src);
    let dst = dir.path().join("hvm.img");
    let out = pv2hvm().arg("convert").arg("--plan").arg(&saved).arg(&src).arg(&dst).arg("-q").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("the source has drifted from the saved plan") && err.contains(expect), "{expect:?}: {err}");
    assert!(!dst.exists() && !dir.path().join("hvm.img.partial").exists());
    assert_eq!(sha256(&src), before);
}

#[test]
fn drift_by_filesystem_uuid() {
    drift(
        |src, _| {
            run_ok(Command::new("tune2fs").arg("-U").arg("5f0e3f7a-0000-4000-8000-00000000abcd").arg(src));
        },
        "the filesystem UUID is 5f0e3f7a-0000-4000-8000-00000000abcd, the plan was made for",
    );
}

#[test]
fn drift_by_initramfs_content() {
    drift(
        |src, _| {
            let t = src.display().to_string();
            let ver = kernel_version(&t);
            let path = format!("/boot/initrd.img-{ver}");
            let tmp = tempfile::NamedTempFile::new().unwrap();
            debugfs(&t, &format!("dump {path} {}", tmp.path().display()), false);
            let mut data = std::fs::read(tmp.path()).unwrap();
            data.extend_from_slice(&[0u8; 512]);
            std::fs::write(tmp.path(), data).unwrap();
            debugfs(&t, &format!("rm {path}"), true);
            debugfs(&t, &format!("write {} {path}", tmp.path().display()), true);
        },
        "/boot/initrd.img-",
    );
}

#[test]
fn drift_by_options() {
    drift(
        |_, saved| {
            let mut plan: Value = serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap();
            plan["options"]["target"] = "xen".into();
            std::fs::write(saved, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
        },
        "the plan made now differs in",
    );
}

#[test]
fn hwaddr_pins_are_reported_and_a_xvc0_console_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_sparse(&fixture_cloud(), dir.path(), "pv.img");
    let t = src.display().to_string();
    debugfs(&t, "mkdir /etc/sysconfig", true);
    debugfs(&t, "mkdir /etc/sysconfig/network-scripts", true);
    guest_write(&t, "/etc/sysconfig/network-scripts/ifcfg-eth0", "DEVICE=eth0\nHWADDR=12:34:56:78:9a:bc\nONBOOT=yes\n");
    let menu = guest_cat(&t, "/boot/grub/menu.lst");
    assert!(menu.contains("console=hvc0"), "{menu}");
    guest_write(&t, "/boot/grub/menu.lst", &menu.replace("console=hvc0", "console=xvc0"));

    let r = inspect(&src);
    assert_eq!(r["console"]["hwaddr_pins"], serde_json::json!(["/etc/sysconfig/network-scripts/ifcfg-eth0"]));
    assert_eq!(r["console"]["kernel_consoles"], serde_json::json!(["xvc0"]));
    let text = stdout(&run_ok(pv2hvm().arg("inspect").arg(&src)));
    assert!(text.contains("network      /etc/sysconfig/network-scripts/ifcfg-eth0 pins HWADDR="), "{text}");

    let p = plan(&src, &[]);
    let edit = p["edits"].as_array().unwrap().iter().find(|e| e["path"] == "/boot/grub/menu.lst").unwrap();
    let notes: Vec<&str> = edit["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(notes.contains(&"line 7: console=xvc0 removed"), "{notes:?}");
    assert!(notes.contains(&"line 7: console=tty0 console=ttyS0,115200n8 added"), "{notes:?}");
    let diff = edit["diff"].as_str().unwrap();
    assert!(diff.contains("-kernel") && diff.contains("console=xvc0"), "{diff}");
    assert!(
        diff.lines().any(|l| l.starts_with("+kernel")
            && l.ends_with("console=tty0 console=ttyS0,115200n8 nvme_core.io_timeout=4294967295")),
        "{diff}"
    );
}
