//! The `pv2hvm` command: parses arguments, dispatches to a subcommand, and turns a failure
//! into one line on stderr and the exit code of its [`ErrorKind`].

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Cmd};
use pv2hvm::{Error, ErrorKind};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The AWS SDK's own warnings (credential and region probing) repeat what pv2hvm's error
    // line says; they show from -vv on.
    let level = match cli.verbose {
        0 => "warn,aws_config=error,aws_smithy_runtime=error,aws_runtime=error",
        1 => "info,aws_config=error,aws_smithy_runtime=error,aws_runtime=error",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    cli::signals::install();
    let quiet = cli.quiet;
    let result = match cli.command {
        Cmd::Convert(args) => cli::commands::convert(args, quiet),
        Cmd::Inspect { src, format, playbooks } => cli::commands::inspect(&src, format, playbooks.as_deref()),
        Cmd::Plan { src, aws, snapshot_now, spec, playbooks, format, output } => cli::commands::plan(
            &src,
            Some((&aws, snapshot_now)),
            &spec,
            playbooks.as_deref(),
            format,
            output.as_deref(),
        ),
        Cmd::Migrate(args) => cli::cloud::migrate(args, quiet),
        Cmd::Cleanup { run_id, all_stale: _, older_than, regions, aws, yes, dry_run, format } => {
            cli::cloud::cleanup(run_id.as_deref(), older_than, &regions, &aws, yes, dry_run, format)
        }
        Cmd::BootCheck { image, bus, timeout, console_log } => {
            cli::commands::boot_check(&image, &bus, timeout, console_log.as_deref())
        }
        Cmd::Fleet { cmd } => cli::fleet::dispatch(cmd, quiet),
        Cmd::Doctor { grub_dir } => cli::commands::doctor(grub_dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pv2hvm: error: {e:#}");
            let kind = e.chain().find_map(|c| c.downcast_ref::<Error>()).map_or(ErrorKind::Internal, Error::kind);
            ExitCode::from(kind.exit_code())
        }
    }
}
