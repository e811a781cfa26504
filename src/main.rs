//! The `pv2hvm` command line: parses arguments and dispatches to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use pv2hvm::bootcheck::{self, BootCheck, DiskBus};
use pv2hvm::convert::{self, ConvertOptions};
use pv2hvm::disk::layout::LayoutKind;
use pv2hvm::drivers::Target;
use pv2hvm::plan::PlanOptions;

#[derive(Parser)]
#[command(name = "pv2hvm", version, about = "Migrate AWS Xen PV root volumes to bootable HVM disks")]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress output.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Layout {
    Mbr,
    Gpt,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Auto,
    Nitro,
    Xen,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bus {
    Nvme,
    Ide,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a raw PV root volume image into a bootable HVM disk image.
    Convert {
        /// The PV volume: an unpartitioned ext2/3/4 filesystem, or an MBR disk.
        src: PathBuf,
        /// The HVM disk image to write (raw, sparse).
        dst: PathBuf,
        #[arg(long, value_enum, default_value = "mbr")]
        layout: Layout,
        /// Disk size in GiB (default: the source rounded up to whole GiB, plus 1).
        #[arg(long, value_name = "GiB")]
        size: Option<u64>,
        /// Print the plan and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Boot the result in QEMU and report what the guest said.
        #[arg(long)]
        boot_check: bool,
        /// Disk buses for --boot-check (repeatable).
        #[arg(long = "boot-bus", value_enum, default_values = ["nvme"])]
        boot_bus: Vec<Bus>,
        /// Seconds to wait for each --boot-check boot.
        #[arg(long, default_value_t = 240)]
        boot_timeout: u64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// GRUB i386-pc directory (default /usr/lib/grub/i386-pc).
        #[arg(long)]
        grub_dir: Option<PathBuf>,
        /// Replace DST if it exists.
        #[arg(long)]
        force: bool,
        /// Instance families to prepare drivers for: auto (Xen HVM and Nitro), nitro or xen.
        #[arg(long, value_enum, default_value = "auto")]
        target: TargetArg,
        /// Inject drivers into every kernel of the bootloader config, not only the default.
        #[arg(long)]
        all_kernels: bool,
        /// Do not rebuild any initramfs (no driver injection).
        #[arg(long, conflicts_with_all = ["all_kernels"])]
        keep_initramfs: bool,
    },
    /// Boot a disk image in QEMU (TCG, SeaBIOS) and report how far it got.
    BootCheck {
        image: PathBuf,
        #[arg(long = "bus", value_enum, default_values = ["nvme"])]
        bus: Vec<Bus>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pv2hvm: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Convert {
            src,
            dst,
            layout,
            size,
            dry_run,
            boot_check,
            boot_bus,
            boot_timeout,
            format,
            grub_dir,
            force,
            target,
            all_kernels,
            keep_initramfs,
        } => {
            let target = match target {
                TargetArg::Auto => Target::Auto,
                TargetArg::Nitro => Target::Nitro,
                TargetArg::Xen => Target::Xen,
            };
            let layout = match layout {
                Layout::Mbr => LayoutKind::Mbr,
                Layout::Gpt => LayoutKind::Gpt,
            };
            if dry_run {
                let opts = PlanOptions {
                    size_gib: size,
                    destination: Some(dst.display().to_string()),
                    target,
                    all_kernels,
                    keep_initramfs,
                    ..PlanOptions::new(layout)
                };
                let plan = convert::plan_only(&src, &opts)
                    .with_context(|| format!("planning the conversion of {}", src.display()))?;
                print_out(format, &plan, || plan.render_text())?;
                return Ok(ExitCode::SUCCESS);
            }
            let opts = ConvertOptions {
                source: src.clone(),
                dest: dst.clone(),
                layout,
                size_gib: size,
                grub_dir,
                force,
                quiet: cli.quiet,
                target,
                all_kernels,
                keep_initramfs,
            };
            let report = convert::convert(&opts)
                .with_context(|| format!("converting {} to {}", src.display(), dst.display()))?;
            let mut boots = Vec::new();
            if boot_check {
                for bus in boot_bus {
                    let mut check = BootCheck::new(&dst, to_bus(bus));
                    check.timeout = std::time::Duration::from_secs(boot_timeout);
                    boots.push(bootcheck::run(&check).context("boot check")?);
                }
            }
            let json = serde_json::json!({ "report": &report, "boot_checks": &boots });
            print_out(format, &json, || {
                let mut s = report.plan.render_text();
                s.push_str(&format!(
                    "\nconverted {} -> {} in {:.1} s ({} bytes of data copied)\n",
                    src.display(),
                    dst.display(),
                    report.seconds,
                    report.bytes_copied
                ));
                for b in &boots {
                    s.push_str(&format!("boot check: {}\n", b.summary()));
                }
                s
            })?;
            if boots.iter().any(|b| !b.ok()) {
                bail!("the converted image did not boot to userspace with root mounted read-write");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BootCheck { image, bus, timeout, console_log } => {
            let mut all_ok = true;
            for b in bus {
                let mut check = BootCheck::new(&image, to_bus(b));
                check.timeout = std::time::Duration::from_secs(timeout);
                check.console_log = console_log.clone();
                let outcome = bootcheck::run(&check).context("boot check")?;
                println!("{}", outcome.summary());
                all_ok &= outcome.ok();
            }
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Doctor { grub_dir } => {
            let checks = pv2hvm::doctor::run(grub_dir.as_deref());
            let mut missing = false;
            for c in &checks {
                match &c.found {
                    Some(f) => println!("ok       {:<36} {f}", c.what),
                    None => {
                        missing |= c.required;
                        let tag = if c.required { "MISSING" } else { "missing" };
                        println!("{tag:<8} {:<36} install the {} package", c.what, c.package);
                    }
                }
            }
            Ok(if missing { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

fn to_bus(b: Bus) -> DiskBus {
    match b {
        Bus::Nvme => DiskBus::Nvme,
        Bus::Ide => DiskBus::Ide,
    }
}

fn print_out<T: serde::Serialize>(format: Format, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Text => print!("{}", text()),
    }
    Ok(())
}
