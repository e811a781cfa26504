//! The `pv2hvm` command line: parses arguments and dispatches to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use pv2hvm::blockdev::{BlockSource, LocalFileSource};
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
    Markdown,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bus {
    Nvme,
    Ide,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Auto,
    Nitro,
    Xen,
}

/// What shapes a plan: shared by `plan` and `convert`.
#[derive(Args)]
struct PlanArgs {
    #[arg(long, value_enum, default_value = "mbr")]
    layout: Layout,
    /// Disk size in GiB (default: the source rounded up to whole GiB, plus 1).
    #[arg(long, value_name = "GiB")]
    size: Option<u64>,
    /// Instance families to prepare drivers for: auto (Xen HVM and Nitro), nitro or xen.
    #[arg(long, value_enum, default_value = "auto")]
    target: TargetArg,
    /// Inject drivers into every kernel of the bootloader config, not only the default.
    #[arg(long)]
    all_kernels: bool,
    /// Do not rebuild any initramfs (no driver injection).
    #[arg(long, conflicts_with = "all_kernels")]
    keep_initramfs: bool,
    /// A directory of extra playbooks (*.toml), tried before the shipped ones.
    #[arg(long, value_name = "DIR")]
    playbooks: Option<PathBuf>,
}

impl PlanArgs {
    fn options(&self, destination: Option<String>) -> PlanOptions {
        PlanOptions {
            layout: match self.layout {
                Layout::Mbr => LayoutKind::Mbr,
                Layout::Gpt => LayoutKind::Gpt,
            },
            size_gib: self.size,
            destination,
            target: match self.target {
                TargetArg::Auto => Target::Auto,
                TargetArg::Nitro => Target::Nitro,
                TargetArg::Xen => Target::Xen,
            },
            all_kernels: self.all_kernels,
            keep_initramfs: self.keep_initramfs,
            playbooks: self.playbooks.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a raw PV root volume image into a bootable HVM disk image.
    Convert {
        /// The PV volume: an unpartitioned ext2/3/4 filesystem, or an MBR disk.
        src: PathBuf,
        /// The HVM disk image to write (raw, sparse).
        dst: PathBuf,
        #[command(flatten)]
        plan: PlanArgs,
        /// Apply exactly this saved plan (from `pv2hvm plan -o`); refuses if SRC drifted.
        #[arg(long = "plan", value_name = "PLAN.json", conflicts_with_all = ["layout", "size", "target", "all_kernels", "keep_initramfs"])]
        saved_plan: Option<PathBuf>,
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
    },
    /// Report what a PV image is and which instance families it can run on after conversion.
    Inspect {
        src: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// A directory of extra playbooks (*.toml).
        #[arg(long, value_name = "DIR")]
        playbooks: Option<PathBuf>,
    },
    /// Print the full conversion plan without writing anything (except -o).
    Plan {
        src: PathBuf,
        #[command(flatten)]
        plan: PlanArgs,
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
            plan,
            saved_plan,
            dry_run,
            boot_check,
            boot_bus,
            boot_timeout,
            format,
            grub_dir,
            force,
        } => {
            let mut popts = plan.options(Some(dst.display().to_string()));
            let mut expected_plan = None;
            if let Some(p) = &saved_plan {
                let saved = pv2hvm::plan_render::load_saved(p).context("reading the saved plan")?;
                popts.layout = saved.layout;
                popts.size_gib = Some(saved.size_gib);
                popts.target = saved.target;
                popts.all_kernels = saved.all_kernels;
                popts.keep_initramfs = saved.keep_initramfs;
                expected_plan = Some(saved.json);
            }
            if dry_run {
                let plan = convert::plan_only(&src, &popts)
                    .with_context(|| format!("planning the conversion of {}", src.display()))?;
                if let Some(saved) = &expected_plan {
                    pv2hvm::plan_render::check_drift(saved, &plan).map_err(convert::ConvertError::Drift)?;
                }
                print_plan(format, &plan)?;
                return Ok(ExitCode::SUCCESS);
            }
            let opts = ConvertOptions {
                source: src.clone(),
                dest: dst.clone(),
                layout: popts.layout,
                size_gib: popts.size_gib,
                grub_dir,
                force,
                quiet: cli.quiet,
                target: popts.target,
                all_kernels: popts.all_kernels,
                keep_initramfs: popts.keep_initramfs,
                playbooks: popts.playbooks,
                expected_plan,
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
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "report": &report, "boot_checks": &boots }))?
                ),
                Format::Markdown => print!("{}", report.plan.render_markdown()),
                Format::Text => print!("{}", report.plan.render_text()),
            }
            if format != Format::Json {
                println!(
                    "\nconverted {} -> {} in {:.1} s ({} bytes of data copied)",
                    src.display(),
                    dst.display(),
                    report.seconds,
                    report.bytes_copied
                );
                for b in &boots {
                    println!("boot check: {}", b.summary());
                }
            }
            if boots.iter().any(|b| !b.ok()) {
                bail!("the converted image did not boot to userspace with root mounted read-write");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inspect { src, format, playbooks } => {
            let source: Arc<dyn BlockSource> =
                Arc::new(LocalFileSource::open(&src).with_context(|| format!("opening {}", src.display()))?);
            let report = pv2hvm::report::inspect(source, playbooks.as_deref())
                .with_context(|| format!("inspecting {}", src.display()))?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                _ => print!("{}", report.render_text()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan { src, plan, format, output } => {
            let popts = plan.options(None);
            let plan = convert::plan_only(&src, &popts)
                .with_context(|| format!("planning the conversion of {}", src.display()))?;
            if let Some(out) = &output {
                let json = serde_json::to_string_pretty(&plan)? + "\n";
                pv2hvm::plan_render::write_atomically(out, &json)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            print_plan(format, &plan)?;
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

fn print_plan(format: Format, plan: &pv2hvm::plan::Plan) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(plan)?),
        Format::Markdown => print!("{}", plan.render_markdown()),
        Format::Text => print!("{}", plan.render_text()),
    }
    Ok(())
}
