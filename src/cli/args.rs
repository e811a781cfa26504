//! The command line's arguments. The conversion choices are the library's own
//! [`ConvertSpec`], flattened in, so the CLI, saved plans and manifests share one type.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use pv2hvm::boot::check::DiskBus;
use pv2hvm::spec::ConvertSpec;

#[derive(Parser)]
#[command(name = "pv2hvm", version, about = "Migrate AWS Xen PV root volumes to bootable HVM disks")]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Convert a raw PV root volume image into a bootable HVM disk image.
    Convert(ConvertArgs),
    /// Report what a PV image is and which instance families it can run on after conversion.
    Inspect {
        src: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// A directory of extra playbooks (*.toml), tried before the shipped ones.
        #[arg(long, value_name = "DIR")]
        playbooks: Option<PathBuf>,
    },
    /// Print the full conversion plan without writing anything (except -o). SRC is a local
    /// image, or an instance, AMI or snapshot id (read from an existing snapshot; nothing is
    /// created unless --snapshot-now).
    Plan {
        src: PathBuf,
        #[command(flatten)]
        aws: AwsArgs,
        /// For an instance: snapshot the root volume now instead of reading its newest snapshot.
        #[arg(long)]
        snapshot_now: bool,
        #[command(flatten)]
        spec: ConvertSpec,
        /// A directory of extra playbooks (*.toml), tried before the shipped ones.
        #[arg(long, value_name = "DIR")]
        playbooks: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Also save the plan as JSON here, for `convert --plan`.
        #[arg(short, long, value_name = "PLAN.json")]
        output: Option<PathBuf>,
    },
    /// Boot a disk image in QEMU (TCG, SeaBIOS) and report how far it got.
    BootCheck {
        image: PathBuf,
        #[arg(long = "bus", value_enum, default_values = ["nvme"])]
        bus: Vec<DiskBus>,
        #[arg(long, default_value_t = 240)]
        timeout: u64,
        /// Keep the whole serial console log here.
        #[arg(long)]
        console_log: Option<PathBuf>,
    },
    /// Migrate a PV instance, AMI or snapshot to a registered HVM AMI.
    Migrate(MigrateArgs),
    /// Remove what a migration run made (found by its tags), or stale temporary snapshots.
    Cleanup {
        /// The run to clean up (printed by migrate, and in every resource's pv2hvm:run-id tag).
        #[arg(long, required_unless_present = "all_stale", conflicts_with = "all_stale")]
        run_id: Option<String>,
        /// Every temporary snapshot older than --older-than hours, whatever run made it.
        #[arg(long)]
        all_stale: bool,
        #[arg(long, default_value_t = 24, requires = "all_stale")]
        older_than: u64,
        /// Other regions to look in for AMI copies (comma-separated).
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        #[command(flatten)]
        aws: AwsArgs,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// List what would be removed and remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Many sources at once: discover, plan, run in crash-safe batches, status, report.
    Fleet {
        #[command(subcommand)]
        cmd: super::fleet::args::FleetCmd,
    },
    /// Check the host tools pv2hvm needs.
    Doctor {
        #[arg(long)]
        grub_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The PV volume: an unpartitioned ext2/3/4 filesystem, or an MBR disk.
    pub src: PathBuf,
    /// The HVM disk image to write (raw, sparse).
    #[arg(required_unless_present = "in_place")]
    pub dst: Option<PathBuf>,
    /// Convert SRC itself, in place, writing only the changed blocks (needs --undo or --no-undo).
    #[arg(long, conflicts_with = "dst")]
    pub in_place: bool,
    /// With --in-place: save every overwritten block here first; `e2undo UNDO SRC` restores SRC.
    #[arg(long, value_name = "UNDO", requires = "in_place")]
    pub undo: Option<PathBuf>,
    /// With --in-place: keep no undo file.
    #[arg(long, requires = "in_place", conflicts_with = "undo")]
    pub no_undo: bool,
    #[command(flatten)]
    pub spec: ConvertSpec,
    /// A directory of extra playbooks (*.toml), tried before the shipped ones.
    #[arg(long, value_name = "DIR")]
    pub playbooks: Option<PathBuf>,
    /// Apply exactly this saved plan (from `pv2hvm plan -o`); refuses if SRC drifted.
    #[arg(long = "plan", value_name = "PLAN.json", conflicts_with_all = ["layout", "size_gib", "target", "all_kernels", "keep_initramfs", "initramfs"])]
    pub saved_plan: Option<PathBuf>,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Boot the result in QEMU and report what the guest said.
    #[arg(long)]
    pub boot_check: bool,
    /// Disk buses for --boot-check (repeatable).
    #[arg(long = "boot-bus", value_enum, default_values = ["nvme"])]
    pub boot_bus: Vec<DiskBus>,
    /// Seconds to wait for each --boot-check boot.
    #[arg(long, default_value_t = 240)]
    pub boot_timeout: u64,
    /// With --boot-check: keep DST even when a boot falls short (the run still fails).
    #[arg(long, requires = "boot_check")]
    pub keep_failed: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// GRUB i386-pc directory (default /usr/lib/grub/i386-pc).
    #[arg(long)]
    pub grub_dir: Option<PathBuf>,
    /// Replace DST if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Where AWS is and how hard to push it.
#[derive(clap::Args, Clone)]
pub struct AwsArgs {
    /// AWS region (default: the standard chain: AWS_REGION, the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS named profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// EBS direct requests in flight.
    #[arg(long, default_value_t = pv2hvm::aws::ebs::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Where fetched blocks and staged images go (default: $TMPDIR or /var/tmp).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The PV instance (i-…), AMI (ami-…) or root snapshot (snap-…).
    pub source: String,
    #[command(flatten)]
    pub spec: ConvertSpec,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Apply exactly this saved plan (from `pv2hvm plan -o`); refuses if the source drifted.
    #[arg(long = "plan", value_name = "PLAN.json", conflicts_with_all = ["layout", "size_gib", "target", "all_kernels", "keep_initramfs", "initramfs"])]
    pub saved_plan: Option<PathBuf>,
    /// Also copy the AMI to these regions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub copy_to_regions: Vec<String>,
    /// The new AMI's name (default: the source's name with -hvm and the run id).
    #[arg(long)]
    pub name: Option<String>,
    /// Stop the instance for a consistent snapshot, and start it again afterwards.
    #[arg(long)]
    pub stop: bool,
    /// Launch a replacement instance from the new AMI, left stopped.
    #[arg(long)]
    pub launch: bool,
    /// The replacement's type (default auto: the Nitro or Xen HVM family of the same size).
    #[arg(long, requires = "launch")]
    pub instance_type: Option<String>,
    /// Keep the temporary source snapshot.
    #[arg(long)]
    pub keep_temp: bool,
    /// Encrypt the new snapshots with this KMS key (id, alias or ARN); by default they keep the
    /// source's key, or take the account's default key when it encrypts by default.
    #[arg(long, value_name = "KEY")]
    pub kms_key_id: Option<String>,
    /// The KMS key of the copy in REGION (repeatable; a key is regional). Without one, an
    /// encrypted AMI's copy takes that region's default EBS key.
    #[arg(long, value_name = "REGION=KEY", value_parser = parse_region_key, requires = "copy_to_regions")]
    pub copy_kms_key_id: Vec<(String, String)>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Print the plan (from an existing snapshot) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Name the run (default: a new random id); its resources carry it as pv2hvm:run-id.
    #[arg(long)]
    pub run_id: Option<String>,
    /// A directory of extra playbooks (*.toml), tried before the shipped ones.
    #[arg(long, value_name = "DIR")]
    pub playbooks: Option<PathBuf>,
    /// GRUB i386-pc directory (default /usr/lib/grub/i386-pc).
    #[arg(long)]
    pub grub_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// `REGION=KEY` of `--copy-kms-key-id`.
pub fn parse_region_key(v: &str) -> Result<(String, String), String> {
    match v.split_once('=') {
        Some((r, k)) if !r.is_empty() && !k.is_empty() && !r.contains(':') => Ok((r.to_string(), k.to_string())),
        _ => Err(format!("{v:?} is not REGION=KEY (for example eu-west-1=alias/backups)")),
    }
}
