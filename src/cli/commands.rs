//! One function per subcommand: open what the user named, call the library, print its
//! rendering. Errors are the library's, with context added here.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use pv2hvm::boot::check::{self, BootOutcome};
use pv2hvm::convert::{self, BootRequest, Environment};
use pv2hvm::guest::playbook::{self, Playbook};
use pv2hvm::{Error, ErrorKind, io};

use super::args::{ConvertArgs, Format};
use super::output::print_plan;
use super::progress::Drawer;

fn playbooks(dir: Option<&Path>) -> Result<Vec<Playbook>> {
    Ok(playbook::load(dir).map_err(Error::from)?)
}

pub fn convert(a: ConvertArgs, quiet: bool) -> Result<ExitCode> {
    let dst = a.dst.clone().unwrap_or_else(|| a.src.clone());
    let what = || match a.in_place {
        true => format!("converting {} in place", a.src.display()),
        false => format!("converting {} to {}", a.src.display(), dst.display()),
    };
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
        let plan = convert::plan_only(source, &spec, &books, Some(dst.display().to_string()))
            .with_context(|| format!("planning the conversion of {}", a.src.display()))?;
        if let Some(saved) = &expected_plan {
            pv2hvm::plan::saved::check(saved, &plan)?;
        }
        print_plan(a.format, &plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    let disk_size = spec.disk_size(source.len());
    let sink = if a.in_place {
        check_in_place(&a, &spec, disk_size, source.len()).with_context(what)?;
        io::open_in_place_sink(&a.src, a.undo.as_deref()).map_err(Error::from).with_context(what)?
    } else {
        io::create_sink(&dst, disk_size, a.force, &a.src).map_err(Error::from).with_context(what)?
    };
    if let Some(notice) = sink.notice() {
        eprintln!("pv2hvm: {notice}");
    }
    let work_dir = dst.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let boot_check = a.boot_check.then(|| BootRequest {
        buses: a.boot_bus.clone(),
        timeout: Duration::from_secs(a.boot_timeout),
        keep_failed: a.keep_failed,
    });
    let env = Environment {
        grub_dir: a.grub_dir.clone(),
        work_dir,
        playbooks: books,
        expected_plan,
        planned: None,
        boot_check,
    };
    let report = convert::convert(source, sink, &spec, &env, &Drawer::new(quiet)).with_context(what)?;
    let boots = &report.boot_checks;
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "report": &report, "boot_checks": boots }))?
        ),
        Format::Markdown => print!("{}", report.plan.render_markdown()),
        Format::Text => print!("{}", report.plan.render_text()),
    }
    if a.format != Format::Json {
        println!(
            "\nconverted {} -> {} in {:.1} s ({} bytes of data copied, {} bytes edited)",
            a.src.display(),
            dst.display(),
            report.seconds,
            report.bytes_copied,
            report.bytes_edited
        );
        for b in boots {
            println!("boot check: {}", b.summary());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--in-place` converts SRC itself: only with the in-place layout, at SRC's size, and with an
/// undo file unless the user declines one.
fn check_in_place(a: &ConvertArgs, spec: &pv2hvm::spec::ConvertSpec, disk_size: u64, len: u64) -> Result<()> {
    let refuse = |why: String| -> Result<()> { Err(Error::Refused(why).into()) };
    if spec.layout != pv2hvm::spec::LayoutKind::InPlace {
        return refuse(format!(
            "--in-place keeps the filesystem where it is: --layout {} moves it; write to a new DST instead",
            spec.layout
        ));
    }
    if disk_size != len {
        return refuse("--in-place keeps the image's size: --size cannot change it".into());
    }
    if a.undo.is_none() && !a.no_undo {
        return refuse(format!(
            "--in-place edits {} itself: pass --undo FILE to be able to restore it with e2undo, or --no-undo",
            a.src.display()
        ));
    }
    Ok(())
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

/// `plan`: of a local image, or (for an instance, AMI or snapshot id that is not a local
/// file) of an AWS source, read from an existing snapshot.
pub fn plan(
    src: &Path,
    cloud: Option<(&super::args::AwsArgs, bool)>,
    spec: &pv2hvm::spec::ConvertSpec,
    dir: Option<&Path>,
    format: Format,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let books = playbooks(dir)?;
    let aws_id = src.to_str().filter(|s| !src.exists() && pv2hvm::aws::ResourceKind::of(s).is_some());
    let plan = match (aws_id, cloud) {
        (Some(id), Some((a, now))) => super::cloud::plan(id, a, now, spec, &books)?,
        _ => {
            let source = io::open_source(src).map_err(Error::from)?;
            convert::plan_only(source, spec, &books, None)
                .with_context(|| format!("planning the conversion of {}", src.display()))?
        }
    };
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
