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
    /// Print the full conversion plan without writing anything (except -o).
    Plan {
        src: PathBuf,
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
