//! The arguments of `pv2hvm fleet …`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use pv2hvm::fleet::shard::Shard;
use pv2hvm::spec::ConvertSpec;

/// Where AWS is, for a fleet: the home region (for DescribeRegions, and the default region).
#[derive(clap::Args, Clone)]
pub struct FleetAws {
    /// The home region (default: the standard chain: AWS_REGION, the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS named profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Where fetched blocks and staged images go (default: $TMPDIR or /var/tmp).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// EBS direct requests in flight per source.
    #[arg(long, default_value_t = pv2hvm::aws::ebs::DEFAULT_CONCURRENCY)]
    pub ebs_concurrency: usize,
}

/// Which sources: regions and filters (discovered), or a file of ids.
#[derive(clap::Args, Clone)]
pub struct Selectors {
    /// Regions to look in: `all` (every region enabled for the account) or a comma list
    /// (default: the home region).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// DescribeInstances/DescribeImages filters, repeatable: `tag:team=web`,
    /// `instance-type=m1.large`.
    #[arg(long = "filter", value_name = "NAME=VALUE", value_parser = pv2hvm::aws::discover::parse_filter)]
    pub filters: Vec<(String, String)>,
    /// Also take the account's PV AMIs (discover always lists them).
    #[arg(long)]
    pub images: bool,
    /// Exactly these sources, one per line: `ID [REGION]` (`#` starts a comment).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["regions", "filters", "images"])]
    pub ids_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Text,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Markdown,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Markdown,
    Json,
    Csv,
}

#[derive(Subcommand)]
pub enum FleetCmd {
    /// List every PV instance and PV AMI of the account in the regions chosen.
    Discover {
        #[command(flatten)]
        sel: Selectors,
        #[command(flatten)]
        aws: FleetAws,
        #[arg(long, value_enum, default_value = "text")]
        format: ListFormat,
    },
    /// Plan every source (from existing snapshots; nothing is created): Markdown for review
    /// on stdout, and with -o the plan file `fleet run --plan` applies.
    Plan {
        #[command(flatten)]
        sel: Selectors,
        #[command(flatten)]
        aws: FleetAws,
        #[command(flatten)]
        spec: ConvertSpec,
        /// Plans in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Write the plan file (JSON, one source per line) here.
        #[arg(short, long, value_name = "FLEET-PLAN.json")]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "markdown")]
        format: PlanFormat,
        /// A directory of extra playbooks (*.toml), tried before the shipped ones.
        #[arg(long, value_name = "DIR")]
        playbooks: Option<PathBuf>,
    },
    /// Migrate every source, in batches, recorded in a journal; run it again to resume.
    Run(RunArgs),
    /// What a journal says: each source's state, and the counts.
    Status {
        #[arg(long, value_name = "FLEET.db")]
        journal: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
    /// One report merged from any number of journals (one per shard).
    Report {
        #[arg(long = "journal", value_name = "FLEET.db", required = true)]
        journals: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReportFormat,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The plan file from `fleet plan -o` (its options, and each source's plan checked for
    /// drift before anything is written).
    #[arg(long = "plan", value_name = "FLEET-PLAN.json", conflicts_with_all = ["regions", "filters", "images", "ids_file", "layout", "size_gib", "target", "all_kernels", "keep_initramfs", "initramfs"])]
    pub saved_plan: Option<PathBuf>,
    #[command(flatten)]
    pub sel: Selectors,
    #[command(flatten)]
    pub aws: FleetAws,
    #[command(flatten)]
    pub spec: ConvertSpec,
    /// Migrations in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Migrations in flight in any one region (default: --concurrency).
    #[arg(long)]
    pub per_region: Option<usize>,
    /// The journal (default pv2hvm-fleet.db, or pv2hvm-fleet-K-of-N.db for a shard).
    #[arg(long, value_name = "FLEET.db")]
    pub journal: Option<PathBuf>,
    /// Take the K-th of N slices (K from 0). Default: from AWS_BATCH_JOB_ARRAY_INDEX or
    /// JOB_COMPLETION_INDEX, with PV2HVM_SHARDS.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Also copy each AMI to these regions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub copy_to_regions: Vec<String>,
    /// The KMS key of the copies in REGION (repeatable; a key is regional).
    #[arg(long, value_name = "REGION=KEY", value_parser = crate::cli::args::parse_region_key, requires = "copy_to_regions")]
    pub copy_kms_key_id: Vec<(String, String)>,
    /// Encrypt the new snapshots with this KMS key (id, alias or ARN).
    #[arg(long, value_name = "KEY")]
    pub kms_key_id: Option<String>,
    /// Launch a stopped replacement for each instance.
    #[arg(long)]
    pub launch: bool,
    /// Stop each instance for a consistent snapshot, and start it again afterwards.
    #[arg(long)]
    pub stop: bool,
    /// Keep the temporary source snapshots.
    #[arg(long)]
    pub keep_temp: bool,
    /// Stop starting new migrations at the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Name the run (default: the journal's, else a new id); every resource carries it.
    #[arg(long)]
    pub run_id: Option<String>,
    /// A directory of extra playbooks (*.toml), tried before the shipped ones.
    #[arg(long, value_name = "DIR")]
    pub playbooks: Option<PathBuf>,
    /// GRUB i386-pc directory (default /usr/lib/grub/i386-pc).
    #[arg(long)]
    pub grub_dir: Option<PathBuf>,
}
