//! Printing what the library returns, in the format asked for.

use anyhow::Result;
use pv2hvm::plan::Plan;

use super::args::Format;

pub fn print_plan(format: Format, plan: &Plan) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(plan)?),
        Format::Markdown => print!("{}", plan.render_markdown()),
        Format::Text => print!("{}", plan.render_text()),
    }
    Ok(())
}
