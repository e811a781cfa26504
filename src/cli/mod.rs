//! The `pv2hvm` command line: arguments, one function per subcommand, progress drawing.

pub mod args;
pub mod cloud;
pub mod commands;
pub mod fleet;
pub mod output;
pub mod progress;
pub mod signals;
