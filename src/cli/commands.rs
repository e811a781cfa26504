//! One function per subcommand: open what the user named, call the library, print its
//! rendering. Errors are the library's, with context added here.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use pv2hvm::boot::check::{self, BootOutcome};
use pv2hvm::convert::{self, Environment};
use pv2hvm::guest::playbook::{self, Playbook};
use pv2hvm::plan::Plan;
use pv2hvm::{Error, ErrorKind, io};

use super::args::{ConvertArgs, Format};
use super::progress::Drawer;

fn playbooks(dir: Option<&Path>) -> Result<Vec<Playbook>> {
    Ok(playbook::load(dir).map_err(Error::from)?)
}

fn print_plan(format: Format, plan: &Plan) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(plan)?),
        Format::Markdown => print!("{}", plan.render_markdown()),
        Format::Text => print!("{}", plan.render_text()),
    }
    Ok(())
}

pub fn convert(a: ConvertArgs, quiet: bool) -> Result<ExitCode> {
    let what = || format!("converting {} to {}", a.src.display(), a.dst.display());
    let (spec, expected_plan) = match &a.saved_plan {
        Some(p) => {
            let saved = pv2hvm::plan::saved::load(p).map_err(Error::from)?;
            (saved.options.clone(), Some(saved))
        }
        None => (a.spec.clone(), None),
    };
    let books = playbooks(a.playbooks.as_deref())?;
    let source = io::open_source(&a.src).map_err(Error::from).with_context(what)?;
    if a.dry_run {
        let plan = convert::plan_only(source, &spec, &books, Some(a.dst.display().to_string()))
            .with_context(|| format!("planning the conversion of {}", a.src.display()))?;
        if let Some(saved) = &expected_plan {
            pv2hvm::plan::saved::check(saved, &plan)?;
        }
        print_plan(a.format, &plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    let disk_size = spec.disk_size(source.len());
    let sink = io::create_sink(&a.dst, disk_size, a.force, &a.src).map_err(Error::from).with_context(what)?;
    let work_dir = a.dst.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let env = Environment { grub_dir: a.grub_dir.clone(), work_dir, playbooks: books, expected_plan };
    let report = convert::convert(source, sink, &spec, &env, &Drawer::new(quiet)).with_context(what)?;
    let boots = if a.boot_check {
        check::run_each(&a.dst, &a.boot_bus, Duration::from_secs(a.boot_timeout), None)
            .map_err(Error::from)
            .context("boot check")?
    } else {
        Vec::new()
    };
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "report": &report, "boot_checks": &boots }))?
        ),
        Format::Markdown => print!("{}", report.plan.render_markdown()),
        Format::Text => print!("{}", report.plan.render_text()),
    }
    if a.format != Format::Json {
        println!(
            "\nconverted {} -> {} in {:.1} s ({} bytes of data copied, {} bytes edited)",
            a.src.display(),
            a.dst.display(),
            report.seconds,
            report.bytes_copied,
            report.bytes_edited
        );
        for b in &boots {
            println!("boot check: {}", b.summary());
        }
    }
    boots_ok(&boots)
}

fn boots_ok(boots: &[BootOutcome]) -> Result<ExitCode> {
    match boots.iter().find(|b| !b.ok()) {
        Some(b) => Err(Error::BootFailed(format!("{} boot stopped at stage {:?}", b.bus, b.stage)).into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

pub fn inspect(src: &Path, format: Format, dir: Option<&Path>) -> Result<ExitCode> {
    let books = playbooks(dir)?;
    let source = io::open_source(src).map_err(Error::from)?;
    let report =
        pv2hvm::guest::report::inspect(source, &books).with_context(|| format!("inspecting {}", src.display()))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Markdown => print!("{}", report.render_markdown()),
        Format::Text => print!("{}", report.render_text()),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn plan(
    src: &Path,
    spec: &pv2hvm::spec::ConvertSpec,
    dir: Option<&Path>,
    format: Format,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let books = playbooks(dir)?;
    let source = io::open_source(src).map_err(Error::from)?;
    let plan = convert::plan_only(source, spec, &books, None)
        .with_context(|| format!("planning the conversion of {}", src.display()))?;
    if let Some(out) = output {
        let json = serde_json::to_string_pretty(&plan)? + "\n";
        pv2hvm::util::write_atomically(out, &json).map_err(|err| Error::Write {
            target: out.display().to_string(),
            offset: 0,
            err,
        })?;
    }
    print_plan(format, &plan)?;
    Ok(ExitCode::SUCCESS)
}

pub fn boot_check(image: &Path, buses: &[check::DiskBus], timeout: u64, log: Option<&Path>) -> Result<ExitCode> {
    let outcomes = check::run_each(image, buses, Duration::from_secs(timeout), log).map_err(Error::from)?;
    for o in &outcomes {
        println!("{}", o.summary());
    }
    boots_ok(&outcomes)
}

pub fn doctor(grub_dir: Option<&Path>) -> Result<ExitCode> {
    let checks = pv2hvm::host::doctor::run(grub_dir);
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
    Ok(if missing { ExitCode::from(ErrorKind::HostTool.exit_code()) } else { ExitCode::SUCCESS })
}
