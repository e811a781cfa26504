//! The `pv2hvm` command line: arguments, one function per subcommand, progress drawing.

pub mod args;
pub mod commands;
pub mod progress;
pub mod signals;
